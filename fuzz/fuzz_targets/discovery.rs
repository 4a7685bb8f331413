//! Discovery answers (`EntitySpec` with its descriptor set) from a hostile function.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| strata_proxy::fuzzing::discovery(data));
