//! The Python runtime, embedded in the binary and written to a directory of its own
//! at start, so a Periscope binary copied anywhere brings its runtime along.

use std::io;
use std::path::Path;

/// `(path under the runtime directory, contents)`.
const FILES: &[(&str, &str)] = &[
    (
        "periscope_addons/__init__.py",
        include_str!("../python/periscope_addons/__init__.py"),
    ),
    (
        "periscope_addons/__main__.py",
        include_str!("../python/periscope_addons/__main__.py"),
    ),
    (
        "periscope_addons/worker.py",
        include_str!("../python/periscope_addons/worker.py"),
    ),
    (
        "periscope_addons/flow.py",
        include_str!("../python/periscope_addons/flow.py"),
    ),
    (
        "periscope_addons/options.py",
        include_str!("../python/periscope_addons/options.py"),
    ),
    (
        "mitmproxy/__init__.py",
        include_str!("../python/mitmproxy/__init__.py"),
    ),
    (
        "mitmproxy/http.py",
        include_str!("../python/mitmproxy/http.py"),
    ),
    (
        "mitmproxy/ctx.py",
        include_str!("../python/mitmproxy/ctx.py"),
    ),
    (
        "mitmproxy/addonmanager.py",
        include_str!("../python/mitmproxy/addonmanager.py"),
    ),
    (
        "mitmproxy/exceptions.py",
        include_str!("../python/mitmproxy/exceptions.py"),
    ),
    (
        "mitmproxy/script.py",
        include_str!("../python/mitmproxy/script.py"),
    ),
    (
        "mitmproxy/flowfilter.py",
        include_str!("../python/mitmproxy/flowfilter.py"),
    ),
    (
        "mitmproxy/tls.py",
        include_str!("../python/mitmproxy/tls.py"),
    ),
];

/// Writes the runtime under `dir` (which goes on the worker's PYTHONPATH).
pub fn write_runtime(dir: &Path) -> io::Result<()> {
    for (path, contents) in FILES {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, contents)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_file_of_the_runtime_package_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
        let mut on_disk = Vec::new();
        for package in ["periscope_addons", "mitmproxy"] {
            for entry in std::fs::read_dir(root.join(package)).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                if name.ends_with(".py") {
                    on_disk.push(format!("{package}/{name}"));
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<_> = super::FILES.iter().map(|(p, _)| p.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }
}
