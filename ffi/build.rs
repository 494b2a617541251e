//! Builds the shim (hax_shim.c) with `cc` and generates its Rust bindings with bindgen. With the
//! `standin` feature (the default) the shim is linked with the stand-in (standin/*.c). With
//! `motr` it is linked with a real libmotr: from a built cortx-motr tree when `MOTR_SRC` names
//! one, else from an installed Motr found with pkg-config (`motr.pc`; headers under
//! `<prefix>/include/motr`). `motr` wins when both features are on.
use std::env;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=hax_shim.c");
    println!("cargo:rerun-if-changed=hax_shim.h");
    println!("cargo:rerun-if-changed=standin");
    println!("cargo:rerun-if-env-changed=MOTR_SRC");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    let here = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    // For the build scripts of dependents (DEP_HAX_SHIM_INCLUDE): where hax_shim.h is.
    println!("cargo:include={}", here.display());
    let mut build = cc::Build::new();
    build
        .file("hax_shim.c")
        .include(".")
        .flag("-Wall")
        .flag("-Wextra")
        .flag("-Werror")
        .flag("-std=gnu11")
        .define("_GNU_SOURCE", None)
        .define("_REENTRANT", None);

    if env::var_os("CARGO_FEATURE_MOTR").is_some() {
        build.define("HAX_BACKEND_MOTR", None);
        match env::var("MOTR_SRC") {
            Ok(motr) => motr_build_tree(&mut build, &motr),
            Err(_) => motr_installed(&mut build),
        }
    } else if env::var_os("CARGO_FEATURE_STANDIN").is_some() {
        build.include("standin/include");
        for c in standin_sources(Path::new("standin")) {
            build.file(c);
        }
        build.compile("hax_shim");
        println!("cargo:rustc-link-lib=dylib=pthread");
    } else {
        panic!("hax-motr-sys needs a backend: the `standin` feature (the default) or `motr`");
    }

    let bindings = bindgen::Builder::default()
        .header("hax_shim.h")
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

/// The stand-in library: every `.c` file of `dir` (ffi/tests/Makefile and scripts/ffi-memcheck
/// take the same set), in name order.
fn standin_sources(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    v.sort();
    v
}

/// A built cortx-motr tree given by MOTR_SRC: the headers (generated `*_xc.h` included),
/// `config.h` and the library the tree holds.
fn motr_build_tree(build: &mut cc::Build, motr: &str) {
    build
        .define("M0_INTERNAL", Some(""))
        .define("M0_EXTERN", Some("extern"))
        .define("ENABLE_LIBFAB", None)
        .flag(format!("-iquote{motr}"))
        .flag("-include")
        .flag("config.h");
    motr_warnings(build);
    build.compile("hax_shim");
    println!("cargo:rustc-link-search=native={motr}/motr/.libs");
    println!("cargo:rustc-link-lib=dylib=motr");
}

/// An installed Motr: compile flags and libraries from `pkg-config motr`.
fn motr_installed(build: &mut cc::Build) {
    let lib = pkg_config::Config::new()
        .cargo_metadata(true)
        .probe("motr")
        .unwrap_or_else(|e| {
            panic!(
                "--features motr needs MOTR_SRC=<a built cortx-motr tree> or an installed Motr \
                 that pkg-config finds (motr.pc; set PKG_CONFIG_PATH): {e}"
            )
        });
    // Motr's Cflags carry more than include paths and defines (-include config.h, -iquote):
    // pass them as pkg-config prints them.
    let out = std::process::Command::new(env::var("PKG_CONFIG").unwrap_or("pkg-config".into()))
        .args(["--cflags", "motr"])
        .output()
        .expect("run pkg-config --cflags motr");
    let cflags = String::from_utf8_lossy(&out.stdout).into_owned();
    for flag in shell_words(&cflags) {
        // Motr's own warning set is for Motr's code; the shim keeps its own (-Werror).
        if flag.starts_with("-W") || flag.starts_with("-O") || flag == "-g" {
            continue;
        }
        build.flag(&flag);
    }
    for dir in &lib.include_paths {
        build.include(dir);
    }
    motr_warnings(build);
    build.compile("hax_shim");
}

/// Warnings Motr's headers trip that are not the shim's.
fn motr_warnings(build: &mut cc::Build) {
    build
        .flag("-Wno-attributes")
        .flag("-Wno-unused-parameter")
        .flag("-Wno-sign-compare")
        .flag("-Wno-missing-field-initializers");
}

/// Splits pkg-config output into words, honouring single and double quotes.
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (None, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}
