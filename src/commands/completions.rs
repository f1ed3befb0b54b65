//! `pixbatch completions SHELL` and `pixbatch man`: both generated from the
//! same clap definitions as the parser, so they never drift from it.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::error::{EXIT_OK, Error};
use crate::report::print;

pub fn completions(args: CompletionsArgs) -> Result<i32, Error> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "pixbatch", &mut script);
    print(&String::from_utf8_lossy(&script))?;
    Ok(EXIT_OK)
}

/// The man page of `pixbatch` on stdout; with `--dir`, one page per
/// command (`pixbatch.1`, `pixbatch-run.1`, ...) written into the folder.
pub fn man(args: ManArgs) -> Result<i32, Error> {
    let command = Cli::command();
    let render = |man: clap_mangen::Man| -> Result<Vec<u8>, Error> {
        let mut page = Vec::new();
        man.render(&mut page)
            .map_err(|error| Error::Other(format!("failed to render the man page: {error}")))?;
        Ok(page)
    };
    let Some(dir) = args.dir else {
        print(&String::from_utf8_lossy(&render(clap_mangen::Man::new(
            command,
        ))?))?;
        return Ok(EXIT_OK);
    };
    std::fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
    let mut pages = vec![(
        "pixbatch".to_owned(),
        clap_mangen::Man::new(command.clone()),
    )];
    for sub in command.get_subcommands() {
        let title = format!("pixbatch-{}", sub.get_name());
        pages.push((
            title.clone(),
            clap_mangen::Man::new(sub.clone()).title(title),
        ));
    }
    for (title, man) in pages {
        let path = dir.join(format!("{title}.1"));
        std::fs::write(&path, render(man)?).map_err(Error::io("write", &path))?;
        print(&format!("wrote {}\n", path.display()))?;
    }
    Ok(EXIT_OK)
}
