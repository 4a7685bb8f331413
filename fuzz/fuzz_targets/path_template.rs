//! `google.api.http` path templates and the paths matched against them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| strata_proxy::fuzzing::path_template(data));
