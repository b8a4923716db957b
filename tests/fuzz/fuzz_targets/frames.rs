//! The host's side of the agent protocol: frames read from a byte stream the guest controls,
//! and the JSON answers inside them. Never a panic, never an allocation past a frame's bound.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    while let Ok(frame) = kiln_protocol::Frame::read_from(&mut input) {
        let _ = serde_json::from_slice::<kiln_protocol::Response>(&frame.payload);
    }
});
