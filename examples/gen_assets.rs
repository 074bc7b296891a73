//! Writes the generated parts of the packages into a directory: gaoler(8) from the
//! command line's definition (clap_mangen) and shell completions for bash, zsh and
//! fish (clap_complete). Run by `packaging/build`:
//! `cargo run --release --example gen_assets -- DIR`.

use std::path::PathBuf;

use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> std::io::Result<()> {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: gen_assets DIR");
        std::process::exit(2);
    };
    std::fs::create_dir_all(out.join("man"))?;
    std::fs::create_dir_all(out.join("completions"))?;
    let cmd = gaoler::cli::Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("System Administration")
        .render(&mut page)?;
    std::fs::write(out.join("man/gaoler.8"), page)?;
    for (shell, file) in [
        (Shell::Bash, "gaoler"),
        (Shell::Zsh, "_gaoler"),
        (Shell::Fish, "gaoler.fish"),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "gaoler", &mut text);
        std::fs::write(out.join("completions").join(file), text)?;
    }
    Ok(())
}
