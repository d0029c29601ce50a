//! Typed configuration of the reference VMM.

use std::path::PathBuf;

/// The command line a guest gets when none is given.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 pci=off";

/// Guest RAM when `--memory` is not given, in MiB.
pub const DEFAULT_MEMORY_MIB: u64 = 512;

/// What to boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelSource {
    /// The project test guest built into this binary.
    TestGuest,
    /// A bzImage or ELF vmlinux file (PVH entry used when the ELF has the note).
    Path(PathBuf),
}

/// Where the guest's serial console goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialConfig {
    /// This process's stdin and stdout (raw mode on a terminal).
    Stdio,
    /// Output appended to a file; no input.
    File(PathBuf),
    /// Output discarded; no input.
    None,
}

impl std::str::FromStr for SerialConfig {
    type Err = String;

    /// Parses `stdio`, `file=PATH` or `none`.
    ///
    /// ```
    /// use kvmkit_vmm_reference::SerialConfig;
    /// assert_eq!("stdio".parse(), Ok(SerialConfig::Stdio));
    /// assert_eq!("file=/tmp/x".parse(), Ok(SerialConfig::File("/tmp/x".into())));
    /// assert!("tcp=1".parse::<SerialConfig>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stdio" => Ok(SerialConfig::Stdio),
            "none" => Ok(SerialConfig::None),
            _ => match s.strip_prefix("file=") {
                Some(p) if !p.is_empty() => Ok(SerialConfig::File(PathBuf::from(p))),
                _ => Err(format!("'{s}' is not one of stdio, file=PATH, none")),
            },
        }
    }
}

/// Everything the VMM needs to build and run a VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmmConfig {
    /// The kernel.
    pub kernel: KernelSource,
    /// An initramfs (cpio archive, possibly compressed).
    pub initramfs: Option<PathBuf>,
    /// The kernel command line.
    pub cmdline: String,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// The serial console.
    pub serial: SerialConfig,
}

impl Default for VmmConfig {
    fn default() -> Self {
        VmmConfig {
            kernel: KernelSource::TestGuest,
            initramfs: None,
            cmdline: DEFAULT_CMDLINE.to_string(),
            memory_mib: DEFAULT_MEMORY_MIB,
            vcpus: 1,
            serial: SerialConfig::Stdio,
        }
    }
}
