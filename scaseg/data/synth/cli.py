"""The ``scaseg-synth`` command line."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from scaseg.data.synth.writer import write_dataset
from scaseg.errors import ScasegError, run_cli, version_option


def _build_app():
    import typer

    from scaseg.cli import SIZE_METAVAR, make_app, parse_size, quiet_option, renamed_option

    app = make_app("Write synthetic street scenes with exact labels as a Cityscapes-layout dataset "
                   "(train and val splits, and a short video).")

    @app.command()
    def synth(
        out_dir: Optional[Path] = typer.Argument(None, metavar="OUT_DIR", help="Output folder, or give it as -o.", show_default=False),
        output: Optional[Path] = typer.Option(None, "-o", "--output", metavar="DIR", help="Output folder (created; replaced only if it is a previous output).", show_default="OUT_DIR"),
        num: int = typer.Option(100, "--num", help="Number of images (train + val)."),
        _n: Optional[str] = renamed_option("-n", "--num"),  # -n is scaseg-bench's --runs
        seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same files."),
        size: str = typer.Option("256x512", "--size", metavar=SIZE_METAVAR, help="Image size: N or HxW."),
        val_fraction: float = typer.Option(0.2, "--val-fraction", help="Share of the images in the val split."),
        video_frames: int = typer.Option(60, "--video-frames", help="Frames of video/synth.mp4 (0: no video)."),
        fps: float = typer.Option(10.0, "--fps", help="Frame rate of the video."),
        workers: int = typer.Option(1, "--workers", "-j", help="Processes that render the scenes (the files are the same for any count; on 2 cores 2 workers took about half the time: docs/data.md)."),
        quiet: bool = quiet_option(),
        version: bool = version_option("scaseg-synth"),
    ) -> None:
        """Write NUM synthetic street scenes (images, labels, a video) to OUT_DIR."""
        if out_dir is not None and output is not None and out_dir != output:
            raise ScasegError(f"two output folders given ({out_dir} and -o {output}); give one")
        dest = output if output is not None else out_dir
        if dest is None:
            raise ScasegError("scaseg-synth needs an output folder: scaseg-synth DIR (or -o DIR)")
        hw = parse_size(size, "--size")
        assert hw is not None
        s = write_dataset(dest, num, seed=seed, size=hw, val_fraction=val_fraction, video_frames=video_frames,
                          fps=fps, progress=not quiet, workers=workers)
        print(f"wrote {s['num_train']} train + {s['num_val']} val images ({s['size'][0]}x{s['size'][1]})"
              f"{' and a ' + str(s['video_frames']) + '-frame video' if s['video_frames'] else ''} "
              f"to {s['out_dir']} in {s['seconds']:.1f} s")

    return app


def main() -> None:
    """Console entry point ``scaseg-synth``."""
    run_cli(_build_app(), prog="scaseg-synth")
