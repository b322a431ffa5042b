//! `sqlx::migrate!` embeds the migration files that exist when the crate is compiled; a new
//! file in `migrations/` must rebuild the store, not only a change to one it already knows.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
