//! Rust language support for Strata user functions.
