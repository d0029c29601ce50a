#![doc = include_str!("../README.md")]

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::process::{Command, Stdio};

/// A target whose headers and ABI the facts come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The C compiler for it, e.g. `powerpc64le-linux-gnu-gcc`.
    pub compiler: &'static str,
    /// The Debian package that provides the compiler.
    pub compiler_package: &'static str,
    /// The Debian package that provides its Linux UAPI headers.
    pub headers_package: &'static str,
}

/// x86_64: the host compiler and `linux-libc-dev`.
pub const X86_64: Target = Target {
    compiler: "gcc",
    compiler_package: "gcc",
    headers_package: "linux-libc-dev",
};

/// 64-bit little-endian PowerPC.
pub const PPC64LE: Target = Target {
    compiler: "powerpc64le-linux-gnu-gcc",
    compiler_package: "gcc-powerpc64le-linux-gnu",
    headers_package: "linux-libc-dev-ppc64el-cross",
};

/// s390x.
pub const S390X: Target = Target {
    compiler: "s390x-linux-gnu-gcc",
    compiler_package: "gcc-s390x-linux-gnu",
    headers_package: "linux-libc-dev-s390x-cross",
};

/// Why facts could not be read.
#[derive(Debug)]
pub enum Error {
    /// The compiler could not be run (not installed?).
    Spawn {
        /// The compiler.
        compiler: String,
        /// The Debian packages to install.
        packages: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The compiler rejected the probe.
    Compile {
        /// The compiler.
        compiler: String,
        /// Its diagnostics.
        stderr: String,
    },
    /// A fact was asked for but not found in the output.
    Missing(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Spawn {
                compiler,
                packages,
                source,
            } => write!(f, "cannot run {compiler} ({source}): install {packages}"),
            Error::Compile { compiler, stderr } => {
                write!(f, "{compiler} rejected the UAPI probe:\n{stderr}")
            }
            Error::Missing(name) => write!(f, "fact {name} missing from the compiler output"),
        }
    }
}

impl std::error::Error for Error {}

/// One fact to read: a name and a C constant expression.
#[derive(Clone, Debug)]
pub struct Probe {
    name: String,
    expr: String,
}

impl Probe {
    /// `expr` evaluated by the target compiler, reported as `name`.
    pub fn new(name: impl Into<String>, expr: impl Into<String>) -> Self {
        Probe {
            name: name.into(),
            expr: expr.into(),
        }
    }

    /// A macro, reported under its own name (e.g. `KVM_RUN`).
    pub fn constant(name: &str) -> Self {
        Probe::new(name, name)
    }

    /// `STRUCT.size` and `STRUCT.align` of `struct STRUCT`.
    pub fn layout(ty: &str) -> Vec<Probe> {
        vec![
            Probe::new(format!("{ty}.size"), format!("sizeof(struct {ty})")),
            Probe::new(format!("{ty}.align"), format!("_Alignof(struct {ty})")),
        ]
    }

    /// `STRUCT.FIELD.offset` and `STRUCT.FIELD.size`; `field` may be a path
    /// through members (`s.io.port`), reported with that path.
    pub fn field(ty: &str, field: &str) -> Vec<Probe> {
        vec![
            Probe::new(
                format!("{ty}.{field}.offset"),
                format!("__builtin_offsetof(struct {ty}, {field})"),
            ),
            Probe::new(
                format!("{ty}.{field}.size"),
                format!("sizeof(((struct {ty} *)0)->{field})"),
            ),
        ]
    }
}

/// The probe for each fact name of the `uapi_facts` convention: `STRUCT.size`,
/// `STRUCT.align`, `STRUCT.FIELD[.SUB].offset`, `STRUCT.FIELD[.SUB].size`, and
/// anything else is a macro name (`KVM_RUN`, `KVM_EXIT_MMIO`, `KVM_CAP_IRQFD`).
///
/// ```
/// let p = kvmkit_uapi_check::probes_for(["KVM_RUN", "kvm_run.io.port.offset", "kvm_regs.size"]);
/// assert_eq!(p.len(), 3);
/// ```
pub fn probes_for<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<Probe> {
    names
        .into_iter()
        .map(|name| {
            let (path, what) = name.rsplit_once('.').unwrap_or((name, ""));
            let (ty, field) = path.split_once('.').unwrap_or((path, ""));
            match (what, field.is_empty()) {
                ("size", true) => Probe::new(name, format!("sizeof(struct {ty})")),
                ("align", true) => Probe::new(name, format!("_Alignof(struct {ty})")),
                ("offset", false) => {
                    Probe::new(name, format!("__builtin_offsetof(struct {ty}, {field})"))
                }
                ("size", false) => Probe::new(name, format!("sizeof(((struct {ty} *)0)->{field})")),
                _ => Probe::constant(name),
            }
        })
        .collect()
}

/// Compiles the probes against `#include <linux/kvm.h>` (plus `extra`
/// includes) for `target` and returns each value, asm-offsets style: the
/// compiler only generates assembly, nothing runs, so any target works on any
/// host.
pub fn read_facts(
    target: &Target,
    extra_includes: &[&str],
    probes: &[Probe],
) -> Result<BTreeMap<String, u64>, Error> {
    let mut src = String::from("#include <linux/kvm.h>\n#include <stddef.h>\n");
    for inc in extra_includes {
        src.push_str(&format!("#include <{inc}>\n"));
    }
    src.push_str("void kvmkit_uapi_probe(void) {\n");
    for p in probes {
        src.push_str(&format!(
            "  __asm__ volatile(\"\\n.ascii \\\"->{} %0\\\"\" : : \"i\" ((unsigned long long)({})));\n",
            p.name, p.expr
        ));
    }
    src.push_str("}\n");
    let spawn_err = |source| Error::Spawn {
        compiler: target.compiler.to_string(),
        packages: format!("{} {}", target.compiler_package, target.headers_package),
        source,
    };
    let mut child = Command::new(target.compiler)
        .args(["-S", "-O0", "-x", "c", "-o", "-", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(src.as_bytes()).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if !out.status.success() {
        return Err(Error::Compile {
            compiler: target.compiler.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let asm = String::from_utf8_lossy(&out.stdout);
    let mut facts = BTreeMap::new();
    for line in asm.lines() {
        let Some(rest) = line.split("->").nth(1) else {
            continue;
        };
        let mut parts = rest.trim_end_matches('"').split_whitespace();
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let v = value.trim_start_matches(['$', '#']);
        let parsed = v
            .parse::<u64>()
            .ok()
            .or_else(|| v.parse::<i64>().ok().map(|n| n as u64));
        if let Some(n) = parsed {
            facts.insert(name.to_string(), n);
        }
    }
    for p in probes {
        if !facts.contains_key(&p.name) {
            return Err(Error::Missing(p.name.clone()));
        }
    }
    Ok(facts)
}

/// Parses the flat JSON object a crate's `uapi_facts` example prints
/// (`{"NAME": 123, ...}`, unsigned decimal values) into a map.
///
/// ```
/// let m = kvmkit_uapi_check::parse_facts_json(r#"{"KVM_RUN": 44672, "kvm_regs.size": 144}"#).unwrap();
/// assert_eq!(m["KVM_RUN"], 44672);
/// ```
pub fn parse_facts_json(s: &str) -> Result<BTreeMap<String, u64>, String> {
    let body = s
        .trim()
        .strip_prefix('{')
        .and_then(|b| b.strip_suffix('}'))
        .ok_or("not a JSON object")?;
    let mut m = BTreeMap::new();
    for item in body.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item
            .split_once(':')
            .ok_or_else(|| format!("bad member {item}"))?;
        let k = k.trim().strip_prefix('"').and_then(|k| k.strip_suffix('"'));
        let k = k.ok_or_else(|| format!("bad key in {item}"))?;
        let v: u64 = v
            .trim()
            .parse()
            .map_err(|_| format!("bad value in {item}"))?;
        m.insert(k.to_string(), v);
    }
    Ok(m)
}

/// Formats facts as the flat JSON object `uapi_facts` examples print.
///
/// ```
/// let mut m = std::collections::BTreeMap::new();
/// m.insert("KVM_RUN".to_string(), 44672u64);
/// assert_eq!(kvmkit_uapi_check::facts_json(&m), "{\"KVM_RUN\": 44672}");
/// ```
pub fn facts_json(facts: &BTreeMap<String, u64>) -> String {
    let items: Vec<String> = facts.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
    format!("{{{}}}", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_facts_from_the_real_header() {
        let mut probes = vec![Probe::constant("KVM_RUN"), Probe::constant("KVM_EXIT_MMIO")];
        probes.extend(Probe::layout("kvm_regs"));
        probes.extend(Probe::field("kvm_run", "exit_reason"));
        probes.extend(Probe::field("kvm_run", "mmio.len"));
        let f = read_facts(&X86_64, &[], &probes).unwrap();
        assert_eq!(f["KVM_RUN"], 44672);
        assert_eq!(f["KVM_EXIT_MMIO"], 6);
        assert_eq!(f["kvm_regs.size"], 144);
        assert_eq!(f["kvm_regs.align"], 8);
        assert_eq!(f["kvm_run.exit_reason.offset"], 8);
        assert_eq!(f["kvm_run.mmio.len.offset"], 48);
        assert_eq!(f["kvm_run.mmio.len.size"], 4);
    }

    #[test]
    fn probes_from_names() {
        let names = [
            "KVM_RUN",
            "kvm_run.io.port.offset",
            "kvm_run.io.port.size",
            "kvm_regs.size",
            "kvm_regs.align",
        ];
        let f = read_facts(&X86_64, &[], &probes_for(names)).unwrap();
        assert_eq!(f["kvm_run.io.port.offset"], 34);
        assert_eq!(f["kvm_run.io.port.size"], 2);
        assert_eq!(f.len(), 5);
    }

    #[test]
    fn errors_are_clear() {
        let e = read_facts(&X86_64, &[], &[Probe::constant("NOT_A_KVM_MACRO")]).unwrap_err();
        assert!(e.to_string().contains("rejected the UAPI probe"), "{e}");
        let t = Target {
            compiler: "/nonexistent/cc",
            compiler_package: "gcc-x",
            headers_package: "hdrs",
        };
        let e = read_facts(&t, &[], &[]).unwrap_err();
        assert!(e.to_string().contains("install gcc-x hdrs"), "{e}");
        assert!(parse_facts_json("[]").is_err());
        assert!(parse_facts_json("{\"a\": x}").is_err());
        assert!(parse_facts_json("{}").unwrap().is_empty());
    }
}
