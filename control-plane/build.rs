//! Rebuilds the control plane when the dashboard's build output changes, so the
//! embedded `web-ui/dist/` is always the one on disk.

fn main() {
    println!("cargo:rerun-if-changed=../web-ui/dist");
}
