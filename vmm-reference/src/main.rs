//! `vmm-reference`: parse the command line, build the VM, run it, map the end
//! to an exit status. All logic is in the library.

use kvmkit_vmm_reference::{parse_args, Vmm, PC_NAME};
use std::process::ExitCode;

fn main() -> ExitCode {
    let config = match parse_args(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line: clap's first line, without its usage block.
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "vmm-reference: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    let result = Vmm::new(&config).and_then(Vmm::run);
    match result {
        Ok(exit) => {
            if let Some(m) = exit.message(PC_NAME) {
                eprintln!("vmm-reference: {m}");
            }
            ExitCode::from(u8::try_from(exit.code()).unwrap_or(1))
        }
        Err(e) => {
            kvmkit_vmm_reference::terminal::restore();
            eprintln!("vmm-reference: {e}");
            ExitCode::from(1)
        }
    }
}
