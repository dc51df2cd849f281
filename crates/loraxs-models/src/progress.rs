//! Injection with a terminal progress bar: SVD initialisation of a large
//! model takes long enough that a user wants to see it move.

use burn::tensor::backend::Backend;
use indicatif::{ProgressBar, ProgressStyle};
use loraxs::{Adapted, AdapterConfig, AdapterHost, inject_with_progress};

/// [`loraxs::inject`] with a progress bar over modules on stderr (hidden
/// when `quiet` or when stderr is not a terminal).
pub fn inject_with_bar<B: Backend, H: AdapterHost<B>>(
    host: H,
    config: &AdapterConfig,
    quiet: bool,
) -> loraxs::Result<Adapted<H>> {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{} r={}", config.method.name(), config.rank));
    let result = inject_with_progress(host, config, &mut |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        bar.set_message(p.module.to_string());
    });
    bar.finish_and_clear();
    result
}
