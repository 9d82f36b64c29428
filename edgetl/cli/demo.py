"""`edgetl demo`: the whole pipeline on synthetic camera scenes (or your data) in one command."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Attach this area's commands to the root app."""

    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("edgetl-demo"), "--out", help="Folder for everything the demo makes "
                                 "(a previous demo folder is replaced)."),
        data: Path | None = typer.Option(None, "--data", help="Your dataset (a folder per class) instead of "
                                         "the synthetic camera scenes."),
        weights: Path | None = typer.Option(None, "--weights", help="MobileNetV2 (alpha 0.35) no-top .h5 "
                                            "ImageNet weights; default: Keras cache, then the shared data, "
                                            "else from scratch."),
        broker: str | None = typer.Option(None, "--broker", help="mqtt://host:port to send events to, or 'none'; "
                                          "default: 127.0.0.1:1883 when it answers, else the local event log."),
        video: Path | None = typer.Option(None, "--video", help="Run the device on your own video instead "
                                          "of a rendered one (no ground truth)."),
        quick: bool = typer.Option(False, "--quick", help="Smaller dataset, model and video (about a minute; "
                                   "for CI)."),
        seed: int = typer.Option(0, "--seed", help="Seed for data, training and video."),
        report: bool = typer.Option(True, "--report/--no-report", help="Write the run's report.html."),
    ) -> None:
        """Train, quantize, sign, deploy and watch a camera video, end to end, offline."""
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter hides the story
        from edgetl.demo import DemoOptions, run_demo, summary_lines

        result = run_demo(DemoOptions(out=out, data=data, weights=weights, broker=broker, video=video,
                                      quick=quick, seed=seed, report=report), echo=typer.echo)
        for line in summary_lines(result):
            typer.echo(line)
