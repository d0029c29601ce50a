//! The command line of `vmm-reference`.

use crate::{
    DiskConfig, IrqchipChoice, KernelSource, NetConfig, SerialConfig, VmmConfig, DEFAULT_CMDLINE,
    DEFAULT_MEMORY_MIB,
};
use clap::Parser;
use std::path::PathBuf;

/// kvmkit's reference VMM: boots Linux (bzImage, ELF vmlinux, PVH) or, by
/// default, the built-in kvmkit test guest, with an 8250 serial console.
///
/// Exit status: 0 when the guest powers off or resets; 1 for a configuration
/// or set-up error; 2 for a command-line error; 3 when the guest
/// triple-faults; 4 when KVM fails to run a vCPU (internal error, failed
/// entry).
#[derive(Debug, Parser)]
#[command(name = "vmm-reference", version, about, long_about)]
pub struct Cli {
    /// Kernel to boot: a bzImage or an ELF vmlinux (its PVH entry is used when
    /// the ELF has a PVH note). Default: the built-in kvmkit test guest.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,

    /// Initial ramdisk (cpio archive, optionally compressed) for the kernel.
    #[arg(long, value_name = "PATH")]
    pub initramfs: Option<PathBuf>,

    /// Kernel command line.
    #[arg(long, value_name = "STR", default_value = DEFAULT_CMDLINE)]
    pub cmdline: String,

    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_MEMORY_MIB)]
    pub memory: u64,

    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub vcpus: u32,

    /// Serial console: `stdio` (raw mode on a terminal; Ctrl-A x quits),
    /// `file=PATH` (output only) or `none`.
    #[arg(long, value_name = "BACKEND", default_value = "stdio")]
    pub serial: SerialConfig,

    /// A virtio-blk disk on a raw image file: `path=FILE[,readonly=on]`.
    /// Repeatable; devices appear in the ACPI DSDT and as
    /// `virtio_mmio.device=` command-line entries.
    #[arg(long, value_name = "path=FILE[,readonly=on]")]
    pub disk: Vec<DiskConfig>,

    /// A virtio-net interface on a tap device: `tap=NAME[,mac=MAC]`.
    /// Repeatable; the tap is created if missing (needs CAP_NET_ADMIN).
    #[arg(long, value_name = "tap=NAME[,mac=MAC]")]
    pub net: Vec<NetConfig>,

    /// Interrupt controller: `kernel` (PIC, IOAPIC and LAPICs in KVM) or
    /// `split` (LAPICs in KVM, the IOAPIC emulated by this VMM).
    #[arg(long, value_name = "kernel|split", default_value = "kernel")]
    pub irqchip: IrqchipChoice,
}

impl From<Cli> for VmmConfig {
    fn from(c: Cli) -> Self {
        VmmConfig {
            kernel: c.kernel.map_or(KernelSource::TestGuest, KernelSource::Path),
            initramfs: c.initramfs,
            cmdline: c.cmdline,
            memory_mib: c.memory,
            vcpus: c.vcpus,
            serial: c.serial,
            disks: c.disk,
            nets: c.net,
            irqchip: c.irqchip,
        }
    }
}

/// Parses `args` (without the program name) into a config, or returns
/// clap's error (whose `exit()` prints help / version or the error).
///
/// ```
/// use kvmkit_vmm_reference::{parse_args, KernelSource, SerialConfig};
/// let c = parse_args(["--vcpus", "2", "--serial", "none"]).unwrap();
/// assert_eq!((c.vcpus, c.memory_mib, c.kernel), (2, 512, KernelSource::TestGuest));
/// assert_eq!(c.serial, SerialConfig::None);
/// assert!(parse_args(["--bogus"]).is_err());
/// ```
pub fn parse_args<I, T>(args: I) -> Result<VmmConfig, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let argv = std::iter::once(std::ffi::OsString::from("vmm-reference"))
        .chain(args.into_iter().map(Into::into));
    Cli::try_parse_from(argv).map(VmmConfig::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        let c = parse_args([
            "--kernel",
            "/k",
            "--initramfs",
            "/i",
            "--cmdline",
            "x=1",
            "--memory",
            "64",
            "--serial",
            "file=/tmp/out",
        ])
        .unwrap();
        assert_eq!(c.kernel, KernelSource::Path("/k".into()));
        assert_eq!(c.initramfs, Some("/i".into()));
        assert_eq!((c.cmdline.as_str(), c.memory_mib), ("x=1", 64));
        assert_eq!(c.serial, SerialConfig::File("/tmp/out".into()));
        let e = parse_args(["--serial", "tcp"]).unwrap_err();
        assert!(e.to_string().contains("not one of stdio"));
        assert!(parse_args(["--vcpus", "-1"]).is_err());
        assert_eq!(
            parse_args(Vec::<String>::new()).unwrap(),
            VmmConfig::default()
        );
    }
}
