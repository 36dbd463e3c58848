//! The crate's build script, not one of its modules: gzips the pages' scripts and styles
//! (`src/web/assets/`) and names each one's version after its content. The binary then carries
//! each file once, compressed, and serves it as it is to every browser (they all accept
//! gzip): a viewer on a phone downloads a quarter of the bytes, and no CPU is spent
//! compressing per request.

use std::io::Write;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

const ASSETS: &str = "src/web/assets";

fn main() {
    println!("cargo::rerun-if-changed={ASSETS}");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let mut names: Vec<String> = std::fs::read_dir(ASSETS)
        .expect("src/web/assets exists")
        .map(|e| {
            e.expect("readable entry")
                .file_name()
                .into_string()
                .expect("UTF-8 name")
        })
        .collect();
    names.sort();
    let mut versions = String::new();
    for name in names {
        let body = std::fs::read(Path::new(ASSETS).join(&name)).expect("readable asset");
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        gz.write_all(&body).expect("gzip in memory");
        let gz = gz.finish().expect("gzip in memory");
        std::fs::write(Path::new(&out).join(format!("{name}.gz")), gz).expect("OUT_DIR writable");
        let hash: String = Sha256::digest(&body)[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        versions.push_str(&format!("(\"{name}\", \"{hash}\"),\n"));
    }
    std::fs::write(
        Path::new(&out).join("asset_versions.rs"),
        format!("[\n{versions}]\n"),
    )
    .expect("OUT_DIR writable");
}
