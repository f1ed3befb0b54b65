//! `pixbatch completions SHELL` and `pixbatch man`: both generated from the
//! same clap definitions as the parser, so they never drift from it.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs};
use crate::error::{EXIT_OK, Error};
use crate::report::print;

pub fn completions(args: CompletionsArgs) -> Result<i32, Error> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "pixbatch", &mut script);
    print(&String::from_utf8_lossy(&script))?;
    Ok(EXIT_OK)
}

/// The man page: the top-level page, then one section per subcommand.
pub fn man() -> Result<i32, Error> {
    let command = Cli::command();
    let mut page = Vec::new();
    let render = |man: clap_mangen::Man, page: &mut Vec<u8>| {
        man.render(page)
            .map_err(|error| Error::Other(format!("failed to render the man page: {error}")))
    };
    render(clap_mangen::Man::new(command.clone()), &mut page)?;
    for sub in command.get_subcommands() {
        let title = format!("pixbatch-{}", sub.get_name());
        render(clap_mangen::Man::new(sub.clone()).title(title), &mut page)?;
    }
    print(&String::from_utf8_lossy(&page))?;
    Ok(EXIT_OK)
}
