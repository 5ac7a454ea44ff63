//! crdgen: print the CustomResourceDefinitions as YAML, or write them into a directory
//! (`crdgen --out crds/`), one file per resource.

use std::path::PathBuf;

use clap::Parser;

/// Print or write mlkube's CustomResourceDefinition YAML.
#[derive(Debug, Parser)]
#[command(name = "crdgen", version)]
struct Args {
    /// Write `<plural>.<group>.yaml` files into this directory instead of printing to stdout.
    #[arg(long, env = "MLKUBE_OUT")]
    out: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let Args { out } = Args::parse();
    let files = mlkube_operator::render::crd_files()?;
    match out {
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            for (name, text) in files {
                std::fs::write(dir.join(name), text)?;
            }
        }
        None => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            for (_, text) in files {
                stdout.write_all(b"---\n")?;
                stdout.write_all(text.as_bytes())?;
            }
        }
    }
    Ok(())
}
