//! A valid component exporting only `wasi:cli/run`: wasp must refuse it.
fn main() {
    println!("not a wasp plugin");
}
