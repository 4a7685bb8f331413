//! HTTP+JSON requests from a hostile client: routing, transcoding, entity keys.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_fuzz_model::things;

#[path = "things.rs"]
mod strata_fuzz_model;

fuzz_target!(|data: &[u8]| strata_proxy::fuzzing::http_json(things(), data));
