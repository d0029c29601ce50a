//! The command line of `vmm-reference`.

use crate::{
    DirtyLogChoice, DiskConfig, IrqchipChoice, KernelSource, NetConfig, SerialConfig, VmmConfig,
    DEFAULT_CMDLINE, DEFAULT_MEMORY_MIB,
};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// kvmkit's reference VMM: boots Linux (bzImage, ELF vmlinux, PVH) or, by
/// default, the built-in kvmkit test guest, with an 8250 serial console.
///
/// Exit status: 0 when the guest powers off or resets; 1 for a configuration
/// or set-up error; 2 for a command-line error; 3 when the guest
/// triple-faults; 4 when KVM fails to run a vCPU (internal error, failed
/// entry).
///
/// With `--api-socket PATH` the VMM serves QMP (the QEMU Machine Protocol)
/// on a Unix socket: query-status, stop, cont, system_powerdown, quit,
/// query-cpus-fast, query-kvm, calc-dirty-rate, query-dirty-rate,
/// query-commands, query-version. `vmm-reference qmp PATH COMMAND` sends
/// one command to it.
#[derive(Debug, Parser)]
#[command(
    name = "vmm-reference",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true
)]
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

    /// Serve QMP (the QEMU Machine Protocol) on a Unix socket at PATH; a
    /// stale socket there is replaced, the socket is removed on exit.
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,

    /// How KVM logs dirty pages: `bitmap` (dirty bitmaps, manual protect
    /// where available) or `ring` (per-vCPU dirty rings); the QMP
    /// calc-dirty-rate modes dirty-bitmap and dirty-ring need the matching one.
    #[arg(long, value_name = "bitmap|ring", default_value = "bitmap")]
    pub dirty_log: DirtyLogChoice,

    /// Wait for an incoming live migration on URI (`tcp:HOST:PORT` or
    /// `unix:PATH`), or with `defer` for QMP `migrate-incoming` to say where,
    /// instead of booting: start with the source's --memory, --vcpus and
    /// --irqchip; the guest continues once the state arrives.
    #[arg(long, value_name = "URI|defer")]
    pub incoming: Option<crate::Incoming>,

    /// Restore the snapshot in DIR (made by QMP `snapshot-save`) instead of
    /// booting: start with the saved VM's --memory, --vcpus and --irqchip.
    /// Its memory file is mapped copy-on-write, read as the guest touches it.
    #[arg(long, value_name = "DIR", conflicts_with = "incoming")]
    pub restore: Option<PathBuf>,

    /// A client command instead of running a VM.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The client subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connect to a QMP socket, run one command, print its result as JSON
    /// (on an error: the error class and description on stderr, exit 1).
    /// `migrate` then polls `query-migrate` and shows the progress on stderr
    /// until the migration ends; it exits 0 only if the VMM said completed.
    Qmp(QmpCommand),
}

/// `vmm-reference qmp PATH COMMAND [JSON-ARGS]`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct QmpCommand {
    /// The QMP socket (the VMM's --api-socket).
    #[arg(value_name = "PATH")]
    pub socket: PathBuf,
    /// The command, e.g. query-status, stop, cont, calc-dirty-rate.
    #[arg(value_name = "COMMAND")]
    pub command: String,
    /// The command's arguments as a JSON object, e.g. '{"calc-time": 1}'.
    #[arg(value_name = "JSON-ARGS")]
    pub arguments: Option<String>,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// Run a VM.
    Run(VmmConfig),
    /// Send one QMP command.
    Qmp(QmpCommand),
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
            api_socket: c.api_socket,
            dirty_log: c.dirty_log,
            incoming: c.incoming,
            restore: c.restore,
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
    match parse_command_line(args)? {
        Invocation::Run(c) => Ok(c),
        Invocation::Qmp(_) => Err(clap::Error::raw(
            clap::error::ErrorKind::InvalidSubcommand,
            "the qmp subcommand does not run a VM\n",
        )),
    }
}

/// Parses `args` (without the program name): a VM to run, or a client
/// subcommand.
///
/// ```
/// use kvmkit_vmm_reference::{parse_command_line, Invocation};
/// let Invocation::Qmp(q) = parse_command_line(["qmp", "/tmp/vm.sock", "stop"]).unwrap() else {
///     panic!("a qmp command")
/// };
/// assert_eq!((q.command.as_str(), q.arguments), ("stop", None));
/// let Invocation::Run(c) = parse_command_line(["--api-socket", "/tmp/vm.sock"]).unwrap() else {
///     panic!("a VM")
/// };
/// assert_eq!(c.api_socket, Some("/tmp/vm.sock".into()));
/// assert!(parse_command_line(["--vcpus", "2", "qmp", "/s", "stop"]).is_err());
/// ```
pub fn parse_command_line<I, T>(args: I) -> Result<Invocation, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let argv = std::iter::once(std::ffi::OsString::from("vmm-reference"))
        .chain(args.into_iter().map(Into::into));
    let mut cli = Cli::try_parse_from(argv)?;
    Ok(match cli.command.take() {
        Some(Command::Qmp(q)) => Invocation::Qmp(q),
        None => Invocation::Run(VmmConfig::from(cli)),
    })
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

    #[test]
    fn qmp_subcommand_and_api_socket() {
        let q = parse_command_line(["qmp", "/s", "calc-dirty-rate", "{\"calc-time\": 1}"]).unwrap();
        assert_eq!(
            q,
            Invocation::Qmp(QmpCommand {
                socket: "/s".into(),
                command: "calc-dirty-rate".into(),
                arguments: Some("{\"calc-time\": 1}".into()),
            })
        );
        assert!(parse_args(["qmp", "/s", "stop"]).is_err(), "not a VM");
        assert!(
            parse_command_line(["qmp", "/s"]).is_err(),
            "COMMAND is needed"
        );
        assert!(parse_command_line(["qmp", "/s", "a", "b", "c"]).is_err());
        let c = parse_args(["--api-socket", "/run/vm.sock", "--vcpus", "2"]).unwrap();
        assert_eq!(c.api_socket, Some("/run/vm.sock".into()));
        assert_eq!(c.dirty_log, DirtyLogChoice::Bitmap);
        let c = parse_args(["--dirty-log", "ring"]).unwrap();
        assert_eq!(c.dirty_log, DirtyLogChoice::Ring);
        assert!(parse_args(["--dirty-log", "pml"]).is_err());
        assert!(parse_args(["--api-socket"]).is_err());
    }
}
