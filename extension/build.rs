//! Compiles `cpp/guard.cc`: the C API calls that can throw a C++ exception are made
//! inside a try/catch there (see that file and `src/guard.rs`).
fn main() {
    println!("cargo:rerun-if-changed=cpp/guard.cc");
    cc::Build::new()
        .cpp(true)
        .file("cpp/guard.cc")
        .flag_if_supported("-std=c++17")
        .warnings(true)
        .compile("promduck_guard");
}
