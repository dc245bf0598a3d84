#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| periscope_fuzz::socks5_handshake(data));
