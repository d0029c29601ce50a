//! Writes the kvmkit test guest ELF to a file, e.g. to boot it with QEMU:
//!
//! ```text
//! cargo run -p kvmkit-test-guest --example write_elf -- /tmp/kvmkit-test-guest.elf
//! qemu-system-x86_64 -M microvm -m 512 -smp 4 -nographic -no-reboot \
//!     -kernel /tmp/kvmkit-test-guest.elf -append "kvmkit.autorun=cpus,poweroff"
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(path), None) = (args.next(), args.next()) else {
        eprintln!("usage: write_elf PATH");
        return ExitCode::from(2);
    };
    match kvmkit_test_guest::write_elf(&path) {
        Ok(()) => {
            println!(
                "wrote {} bytes to {}",
                kvmkit_test_guest::TEST_GUEST_ELF.len(),
                path.to_string_lossy()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("write_elf: {}: {e}", path.to_string_lossy());
            ExitCode::FAILURE
        }
    }
}
