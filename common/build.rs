// Records the git revision for aws_quota_exporter_build_info{revision}. A build without
// git (a source tarball) says "unknown"; HEADROOM_REVISION overrides both.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=HEADROOM_REVISION");
    println!("cargo:rerun-if-changed=../.git/HEAD");
    println!("cargo:rerun-if-changed=../.git/refs/heads");
    let rev = std::env::var("HEADROOM_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| {
            Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_string())
        });
    println!(
        "cargo:rustc-env=HEADROOM_REVISION={}",
        rev.unwrap_or_else(|| "unknown".into())
    );
}
