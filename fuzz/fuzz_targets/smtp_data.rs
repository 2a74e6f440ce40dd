//! SMTP DATA/BDAT framing on raw line-buffer bytes, as the session does it: chunking
//! invariance, a reference framer, DATA ends only at CRLF.CRLF, output never longer
//! than input. The harness and its input layout: `tidegate_core::fuzzing::smtp_data`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tidegate_core::fuzzing::smtp_data(data));
