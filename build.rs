//! Builds the ffi/ shim with `cc` (against the stand-in by default, against a real Motr build
//! tree with `--features motr` and `MOTR_SRC`) and generates its Rust bindings with bindgen.
use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=ffi");
    println!("cargo:rerun-if-env-changed=MOTR_SRC");
    let mut build = cc::Build::new();
    build
        .file("ffi/hax_shim.c")
        .include("ffi")
        .flag("-Wall")
        .flag("-Wextra")
        .flag("-Werror")
        .flag("-std=gnu11")
        .define("_GNU_SOURCE", None)
        .define("_REENTRANT", None);

    if env::var_os("CARGO_FEATURE_MOTR").is_some() {
        let motr = env::var("MOTR_SRC")
            .expect("--features motr needs MOTR_SRC=<path to a built cortx-motr tree>");
        build
            .define("M0_INTERNAL", Some(""))
            .define("M0_EXTERN", Some("extern"))
            .define("ENABLE_LIBFAB", None)
            .define("HAX_BACKEND_MOTR", None)
            .flag(format!("-iquote{motr}"))
            .flag("-include")
            .flag("config.h")
            .flag("-Wno-attributes")
            .flag("-Wno-unused-parameter")
            .flag("-Wno-sign-compare")
            .flag("-Wno-missing-field-initializers");
        build.compile("hax_shim");
        println!("cargo:rustc-link-search=native={motr}/motr/.libs");
        println!("cargo:rustc-link-lib=dylib=motr");
    } else {
        build
            .include("ffi/standin/include")
            .file("ffi/standin/interface.c")
            .file("ffi/standin/wire.c");
        build.compile("hax_shim");
        println!("cargo:rustc-link-lib=dylib=pthread");
    }

    let bindings = bindgen::Builder::default()
        .header("ffi/hax_shim.h")
        .allowlist_function("hax_shim_.*")
        .allowlist_type("hax_.*")
        .allowlist_var("HAX_.*")
        .derive_default(true)
        .generate()
        .expect(
            "bindgen could not read ffi/hax_shim.h (is libclang-dev installed? run scripts/setup)",
        );
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("shim_bindings.rs");
    bindings.write_to_file(out).expect("write bindings");
}
