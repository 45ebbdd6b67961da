//! Rebuild the crate when a migration is added or changed: `sqlx::migrate!` embeds the
//! files of `migrations/` but cannot ask Cargo to watch the directory itself, so a new
//! migration would otherwise be missing from a binary built before it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
