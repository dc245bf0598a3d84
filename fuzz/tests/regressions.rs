//! Replays every input kept under `fuzz/regressions/<target>/` (crashes found by the
//! fuzzer, kept after the fix) and every seed under `fuzz/seeds/<target>/` through the
//! target's function, on stable Rust and without libFuzzer:
//!
//!     cargo test --manifest-path fuzz/Cargo.toml
//!
//! scripts/fuzz.sh runs the same inputs through the instrumented binaries first.

use std::path::Path;

fn replay(kind: &str, target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    files.sort();
    for file in files.iter().filter(|f| f.is_file()) {
        let data = std::fs::read(file).unwrap();
        eprintln!("{target}: {}", file.display());
        run(&data);
    }
}

macro_rules! targets {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay("seeds", stringify!($name), periscope_fuzz::$name);
                replay("regressions", stringify!($name), periscope_fuzz::$name);
            }
        )*
    };
}

targets!(
    client_hello,
    socks5_handshake,
    filter,
    connect_authority,
    flow_json,
    har_json,
    har_writer,
    decode_body,
    store_file,
    store_rows,
);
