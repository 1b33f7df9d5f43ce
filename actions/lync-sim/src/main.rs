//! `baton-lync-sim`: the Lync simulator as its own program, for `baton-agent`'s `command`
//! executor on Linux hosts and in tests. The logic lives in the library.

use clap::Parser;

fn main() {
    if let Err(e) = baton_lync_sim::run(baton_lync_sim::LyncSimArgs::parse()) {
        eprintln!("{e:#}");
        std::process::exit(1);
    }
}
