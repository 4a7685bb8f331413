//! Answers on an entity stream from a hostile function.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_fuzz_model::things;

#[path = "things.rs"]
mod strata_fuzz_model;

fuzz_target!(|data: &[u8]| strata_proxy::fuzzing::entity_reply(things(), data));
