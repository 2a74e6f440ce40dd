//! Maildir file names: parsing, adding flags, building delivered names, UIDLs.
//! The harness and its input layout: `tidegate_core::fuzzing::maildir_name`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tidegate_core::fuzzing::maildir_name(data));
