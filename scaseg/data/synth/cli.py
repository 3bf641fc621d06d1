"""The ``scaseg-synth`` command line."""
from __future__ import annotations

from pathlib import Path

from scaseg.data.synth.writer import write_dataset
from scaseg.errors import run_cli, version_option


def _build_app():
    import typer

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                      help="Write synthetic street scenes with exact labels as a Cityscapes-layout dataset.")

    @app.command()
    def synth(
        out_dir: Path = typer.Argument(..., help="Output folder (created; replaced only if it is a previous output)."),
        num: int = typer.Option(100, "--num", "-n", help="Number of images (train + val)."),
        seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same files."),
        size: tuple[int, int] = typer.Option((256, 512), "--size", metavar="H W", help="Image height and width."),
        val_fraction: float = typer.Option(0.2, "--val-fraction", help="Share of the images in the val split."),
        video_frames: int = typer.Option(60, "--video-frames", help="Frames of video/synth.mp4 (0: no video)."),
        fps: float = typer.Option(10.0, "--fps", help="Frame rate of the video."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
        version: bool = version_option("scaseg-synth"),
    ) -> None:
        s = write_dataset(out_dir, num, seed=seed, size=size, val_fraction=val_fraction, video_frames=video_frames,
                          fps=fps, progress=not quiet)
        print(f"wrote {s['num_train']} train + {s['num_val']} val images ({s['size'][0]}x{s['size'][1]})"
              f"{' and a ' + str(s['video_frames']) + '-frame video' if s['video_frames'] else ''} "
              f"to {s['out_dir']} in {s['seconds']:.1f} s")

    return app


def main() -> None:
    """Console entry point ``scaseg-synth``."""
    run_cli(_build_app(), prog="scaseg-synth")
