"""The ``activeseg`` command line.

Subcommands wrap the same core generators the napari widgets use, with tqdm progress bars (on stderr).
Heavy imports happen inside the subcommands so ``activeseg --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .core.config import BENCHMARK_STRATEGIES  # plain dataclasses: keeps --help instant


def _cmd_info(args: argparse.Namespace) -> int:
    import platform

    import torch

    from . import __version__
    from .core.device import choose_device, device_plan

    print(f"napari-activeseg {__version__}")
    print(f"python {platform.python_version()} on {platform.platform()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"device (auto): {choose_device('auto')}")
    plan = device_plan("auto")
    print(f"a new project there: {plan.name}, U-Net width {plan.width}, batch "
          f"{plan.batch_size}, {plan.tile_batch} tiles per prediction batch, mixed precision "
          f"{'on' if plan.amp else 'off'}")
    return 0


def _new_demo_folder(base: Path) -> Path:
    folder, n = base, 1
    while folder.exists() and any(folder.iterdir()):
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


def _cmd_demo(args: argparse.Namespace) -> int:
    """napari with the workflow docked on the bundled sample images, in a fresh project."""
    import napari

    from ._sample_data import sample_paths
    from ._widgets import ActiveSegWidget
    from .core.project import Project

    folder = _new_demo_folder(Path(args.project).expanduser())
    project = Project.create(folder, images=sample_paths(), copy_images=True,
                             classes=("background", "nucleus"),
                             colors=("#00000000", "#ffd400"))
    print(f"demo project: {folder}")
    viewer = napari.Viewer(title="napari-activeseg demo")
    widget = ActiveSegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Active learning", area="right")
    widget.window().showMaximized()  # the canvas gets the room the dock leaves
    widget.open_session(project)
    if args.screenshot:
        return _demo_screenshot(viewer, widget, args)
    widget.suggest_next()
    napari.run()
    return 0


def _demo_screenshot(viewer, widget, args) -> int:
    """Scripted run of the demo for the README screenshot (hidden option): two images are
    labelled from their ground truth, a round is trained in the widget's worker, and the next
    suggestion is opened."""
    import time

    from qtpy.QtWidgets import QApplication

    from .core.imageio import read_image

    def wait(cond, seconds=600):
        deadline = time.monotonic() + seconds
        while not cond() and time.monotonic() < deadline:
            QApplication.processEvents()
            time.sleep(0.01)

    session = widget.session
    for pick in session.suggest(2):
        rec = session.project.get_image(pick.image_id)
        mask = read_image(Path(__file__).parent / "sample_data" / "masks" / rec.name)
        session.submit(pick.image_id, (mask > 0).astype("uint8"))
    done = []
    widget.scoring_finished.connect(done.append)
    widget.train()
    wait(lambda: bool(done))
    opened = []
    widget.image_opened.connect(opened.append)
    widget.suggest_next()
    wait(lambda: bool(opened))
    viewer.window.resize(1600, 1000)
    viewer.reset_view()
    for _ in range(20):
        QApplication.processEvents()
    viewer.screenshot(args.screenshot, canvas_only=False)
    viewer.close()
    return 0


def _progress_printer(stream=None):
    """A tqdm bar for the export generators: images finished of the total, the image in progress
    (and its tiles) after it; a skipped image gets a line of its own. It closes itself after
    the last image."""
    from tqdm import tqdm

    stream = stream or sys.stderr
    bar = None

    def show(rec) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=rec.total, unit="image", file=stream, miniters=0,
                       dynamic_ncols=stream.isatty())
        if rec.kind == "tiles":
            bar.set_postfix_str(f"{rec.name}: tile {rec.tiles_done}/{rec.tiles_total}",
                                refresh=False)
            bar.update(0)  # redraws when tqdm's interval has passed
            return
        if rec.error:
            bar.write(f"{rec.name}: skipped: {rec.error}", file=stream)
        bar.set_postfix_str(rec.name, refresh=False)
        bar.update(rec.done - bar.n)
        if rec.done >= rec.total:
            bar.close()

    return show


def _map_list(text: str | None) -> tuple[str, ...]:
    return tuple(m.strip() for m in text.split(",") if m.strip()) if text else ()


def _cmd_predict(args: argparse.Namespace) -> int:
    """Apply a project's model, or a bioimage.io package, to a folder of new images."""
    from .core.export import predict_folder

    try:
        result = predict_folder(
            args.project, args.input_dir, args.out_dir, version=args.version,
            pattern=args.pattern, recursive=args.recursive, device=args.device,
            uncertainty=_map_list(args.maps) if args.uncertainty else None,
            probabilities=args.probabilities, channel_axis=args.channel_axis,
            scheduler=args.scheduler, large_image_pixels=args.large_image_pixels,
            progress=_progress_printer(),
        )
    except ImportError as err:  # without the [bioimageio] or [cluster] extra: what to install
        raise ValueError(str(err)) from err
    n_ok, n_bad = len(result.written), len(result.failed)
    if not n_ok:
        reasons = "; ".join(f"{name}: {why}" for name, why in result.failed[:3])
        raise ValueError(f"none of the {n_bad} image(s) in {args.input_dir} could be predicted "
                         f"({reasons}).")
    print(f"{n_ok} image(s) predicted with model {result.model_version} -> {result.out_dir}"
          + (f"; {n_bad} skipped (listed above and in {result.manifest.name})" if n_bad else ""))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """Export labels, predictions, the model and provenance of a project (read-only open)."""
    from .core import export as ex
    from .core.project import Project

    chosen = {k for k in ("labels", "predictions", "model", "provenance", "bioimageio",
                          "measurements") if getattr(args, k)}
    everything = not chosen
    chosen = chosen or {"labels", "predictions", "model", "provenance", "measurements"}
    out = Path(args.out_dir).expanduser()
    with Project.open(args.project, read_only=True) as project:
        has_model = bool(project.models())
        if "labels" in chosen:
            files = ex.export_labels(project, out / "labels")
            n = sum(1 for f in files if f.suffix == ".tif" and f.parent.name != "reviewed")
            print(f"labels: {n} submitted image(s) -> {out / 'labels'}" if n else
                  "labels: no submitted labels yet")
        if "provenance" in chosen:
            ex.export_provenance(project, out / "provenance")
            print(f"provenance: history, rounds, submissions -> {out / 'provenance'}")
        if "measurements" in chosen:
            if project.labelled_ids():
                m = ex.measure_project(project, out / "measurements", source="labels")
                print(f"measurements: {len(m.objects)} object(s) of {len(m.images)} labelled "
                      f"image(s) -> {out / 'measurements'}")
            else:
                print("measurements: no submitted labels yet")
        if everything and not has_model and args.version is None:
            print("model, predictions: skipped, the project has no trained model yet")
            return 0
        if "model" in chosen:
            info = ex.export_model(project, out / "model", version=args.version,
                                   onnx=not args.no_onnx)
            onnx = info["onnx"]
            print(f"model {info['version']}: TorchScript, safetensors, preprocessing.json -> "
                  f"{out / 'model'}; ONNX {onnx['status']}"
                  + (f" ({onnx['note']})" if onnx.get("note") else ""))
        if "bioimageio" in chosen:
            try:
                package = ex.export_bioimageio(project, out, version=args.version)
            except ImportError as err:  # the optional extra: a message, not a traceback
                raise ValueError(str(err)) from err
            print(f"bioimage.io model package (validated) -> {package}")
        if "predictions" in chosen:
            result = ex.export_predictions(
                project, out / "predictions", model_version=args.version,
                maps=_map_list(args.maps), device=args.device, progress=_progress_printer())
            print(f"predictions: {len(result.written)} image(s) with model "
                  f"{result.model_version} -> {result.out_dir}"
                  + (f"; {len(result.failed)} skipped" if result.failed else ""))
    return 0


def _cmd_measure(args: argparse.Namespace) -> int:
    """One CSV row per object (and per image) of the labels and/or predictions (read-only)."""
    from .core.export import measure_project

    result = measure_project(args.project, args.out_dir, source=args.source,
                             pixel_size=args.pixel_size, model_version=args.version,
                             device=args.device, progress=_progress_printer())
    print(f"{len(result.objects)} object(s) in {len(result.images)} image(s) "
          f"({args.source}) -> {result.out_dir / 'objects.csv'}, images.csv"
          + (f"; {len(result.failed)} image(s) skipped" if result.failed else ""))
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    """Import masks made elsewhere as submitted labels; 0 when at least one was (would be)."""
    from .core.project import Project, ProjectInUseError

    try:
        project = Project.open(args.project, read_only=args.dry_run)
    except ProjectInUseError as exc:
        raise ValueError(f"{exc} 'activeseg import' writes to the project: close it in napari "
                         "(or the other program) first; --dry-run only reads it.") from None
    with project:
        report = project.import_masks(args.mask_dir, replace=args.replace, dry_run=args.dry_run)
    print(report)
    return 0 if report.imported else 1


def _cmd_benchmark(args: argparse.Namespace) -> int:
    """Simulated-annotator learning curves; see ``evaluation/runner.py`` for the protocol."""
    from .core.progress import run_to_end
    from .evaluation.config import BenchmarkConfig, parse_list, parse_seeds
    from .evaluation.progress import BenchmarkBar
    from .evaluation.runner import run_benchmark

    model = {k: v for k, v in (("width", args.width), ("depth", args.depth)) if v is not None}
    train = {k: v for k, v in (("patch_size", args.patch_size), ("batch_size", args.batch_size),
                                ("lr", args.lr), ("focus_p", args.focus_p)) if v is not None}
    inference = {} if args.tile_size is None else {"tile_size": args.tile_size}
    config = BenchmarkConfig(
        data=Path(args.data), out=Path(args.out),
        strategies=parse_list(args.strategies), seeds=parse_seeds(args.seeds),
        initial=args.initial, step=args.step, rounds=args.rounds,
        baselines=parse_list(args.baselines, none_ok=True), regions=args.regions,
        region_size=args.region_size, device=args.device, steps=args.steps,
        full_steps=args.full_steps, max_images=args.max_images,
        test_fraction=args.test_fraction, model=model, train=train, inference=inference,
        rf_samples=args.rf_samples or None, objects=args.objects)
    bar = BenchmarkBar(sys.stderr) if not args.quiet else None
    gen = run_benchmark(config)
    try:
        result = run_to_end(gen, bar)
    except KeyboardInterrupt:
        gen.close()
        if bar is not None:
            bar.close()
        print("\nactiveseg: interrupted; run the same command again to resume where it "
              "stopped.", file=sys.stderr)
        return 130
    finally:
        if bar is not None:
            bar.close()  # also before a bad-input error is printed; a second close does nothing
    print(result.table())
    for note in result.notes:
        print(f"note: {note}")
    for kind in ("json", "csv", "png"):
        print(f"{kind}: {result.files[kind]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="activeseg",
        description="Active-learning segmentation: train, predict, benchmark (napari plugin CLI).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="versions and the device that would be used")
    info.set_defaults(func=_cmd_info)
    demo = sub.add_parser("demo", help="open napari with the plugin on the bundled nuclei images")
    demo.add_argument("--project", default="~/activeseg-demo",
                      help="folder for the demo project (a new numbered one if it exists)")
    demo.add_argument("--screenshot", default=None, help=argparse.SUPPRESS)
    demo.set_defaults(func=_cmd_demo)
    bench = sub.add_parser(
        "benchmark",
        help="learning curves of query strategies with a simulated annotator",
        description="Simulate an annotator from ground-truth masks: every strategy and seed "
                    "starts from the same labelled images, each round trains (warm start, a "
                    "fixed number of steps), measures test Dice, and has the annotator correct "
                    "the next picks. Writes OUT/results.json, OUT/results.csv and "
                    "OUT/learning_curve.png; an interrupted run resumes when run again.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    bench.add_argument("--data", required=True,
                       help="folder with images/ and masks/ holding files of the same names")
    bench.add_argument("--out", required=True, help="output folder (resumes a run found there)")
    bench.add_argument("--strategies", default=",".join(BENCHMARK_STRATEGIES),
                       help="comma-separated query strategies")
    bench.add_argument("--seeds", default="3",
                       help="a count (3 = seeds 0,1,2) or a comma-separated list (0,4,7)")
    bench.add_argument("--initial", type=int, default=4,
                       help="images (regions) labelled in round 0, drawn by the seed")
    bench.add_argument("--step", type=int, default=8,
                       help="images (regions) the annotator corrects per round")
    bench.add_argument("--rounds", type=int, default=3,
                       help="rounds after round 0 (the last has initial + rounds*step labelled)")
    bench.add_argument("--baselines", default="rf,full",
                       help="rf (random forest on the random strategy's images), full (U-Net "
                            "on the whole pool), cellpose (Cellpose from scratch on the rf "
                            "images, [cellpose] extra; needs instances/), or none")
    bench.add_argument("--objects", action="store_true",
                       help="train the U-Net in the instance mode on the dataset's instances/ "
                            "(boundary output; objects scored either way when instances/ exist)")
    bench.add_argument("--regions", action="store_true",
                       help="annotate suggested regions instead of whole images (x = pixels)")
    bench.add_argument("--region-size", type=int, default=256, help="region side in pixels")
    bench.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    bench.add_argument("--steps", type=int, default=125,
                       help="optimiser steps per round (fixed: results do not depend on load)")
    bench.add_argument("--full-steps", type=int, default=600,
                       help="optimiser steps of the full-pool baseline")
    bench.add_argument("--max-images", type=int, default=None,
                       help="use only the first N images of the folder (quick runs)")
    bench.add_argument("--test-fraction", type=float, default=0.3,
                       help="fraction of the images held out for testing")
    for flag, kind, what in (("--width", int, "U-Net width"), ("--depth", int, "U-Net depth"),
                             ("--patch-size", int, "training patch size"),
                             ("--batch-size", int, "training batch size"),
                             ("--lr", float, "peak learning rate"),
                             ("--focus-p", float, "fraction of training patches centred on "
                              "pixels the previous model got wrong or was unsure of")):
        bench.add_argument(flag, type=kind, default=None, help=f"{what} (None = the product's)")
    bench.add_argument("--tile-size", type=int, default=None,
                       help="prediction tile size (None = the product's)")
    bench.add_argument("--rf-samples", type=int, default=80_000,
                       help="training pixels of the random forest per round, spread over its "
                            "images (0 = 20000 per image, uncapped)")
    bench.add_argument("--quiet", action="store_true", help="no progress bar")
    bench.set_defaults(func=_cmd_benchmark)
    predict = sub.add_parser(
        "predict", help="apply a project's model (or a bioimage.io package) to a folder",
        description="Segment every image of INPUT_DIR with the project's model and write "
                    "<name>_labels.tif (and optional maps) to OUT_DIR. The project is opened "
                    "read-only, so napari may have it open meanwhile.")
    predict.add_argument("project", metavar="PROJECT",
                         help="project folder, or a bioimage.io model package (.zip, rdf.yaml)")
    predict.add_argument("input_dir", metavar="INPUT_DIR", help="folder of images to segment")
    predict.add_argument("out_dir", metavar="OUT_DIR", help="output folder (created)")
    predict.add_argument("--version", default=None, help="model version (default: latest)")
    predict.add_argument("--pattern", default="*", help="glob on file names (default: *)")
    predict.add_argument("--recursive", action="store_true", help="also search sub-folders")
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    predict.add_argument("--uncertainty", action="store_true",
                         help="also write uncertainty maps (<name>_<map>.tif, see --maps)")
    predict.add_argument("--maps", default="entropy",
                         help="maps of --uncertainty, comma-separated: entropy, margin, "
                         "least_confidence (default: entropy)")
    predict.add_argument("--probabilities", action="store_true",
                         help="also write the class probabilities (K, H, W) float32")
    predict.add_argument("--channel-axis", type=int, default=None,
                         help="channel axis of multichannel TIFF stacks")
    predict.add_argument("--scheduler", default=None, metavar="ADDRESS",
                         help="predict on a Dask cluster: its scheduler, e.g. tcp://host:8786 "
                              "(needs the [cluster] extra)")
    predict.add_argument("--large-image-pixels", type=int, default=None, metavar="N",
                         help="images of more pixels are read lazily and predicted strip by "
                              "strip, written as tiled TIFFs (default: the project's setting, "
                              "else 4096x4096)")
    predict.set_defaults(func=_cmd_predict)
    export = sub.add_parser(
        "export", help="export labels, predictions, the model and provenance",
        description="Write OUT_DIR/labels, predictions, model (TorchScript, ONNX if possible, "
                    "safetensors, preprocessing.json) and provenance (history, rounds, "
                    "submissions); all of them unless some are chosen. Read-only.")
    export.add_argument("project", metavar="PROJECT", help="project folder")
    export.add_argument("out_dir", metavar="OUT_DIR", help="output folder (created)")
    for what, text in (("labels", "submitted labels as TIFF"),
                       ("predictions", "the model's labels and uncertainty for every image"),
                       ("model", "the model: TorchScript, ONNX, weights, preprocessing.json"),
                       ("provenance", "query history, rounds and submissions"),
                       ("measurements", ("one CSV row per object of the submitted labels "
                                         "(see 'activeseg measure' for the predictions)")),
                       ("bioimageio", ("the model as a bioimage.io package (OUT_DIR/"
                                       "<project>_<version>.bioimageio.zip; [bioimageio] "
                                       "extra)"))):
        export.add_argument(f"--{what}", action="store_true", help=text)
    export.add_argument("--version", default=None, help="model version (default: latest)")
    export.add_argument("--maps", default="entropy",
                        help="uncertainty maps of --predictions, comma-separated")
    export.add_argument("--no-onnx", action="store_true", help="do not try ONNX")
    export.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    export.set_defaults(func=_cmd_export)
    measure = sub.add_parser(
        "measure", help="one CSV row per object: area, intensities, shape (and per image)",
        description="Measure every object (a connected component of a class) of the "
                    "submitted labels and/or the model's predictions of the pool: OUT_DIR/"
                    "objects.csv (area, centroid, bounding box, intensity per channel, "
                    "eccentricity, solidity, ...) and OUT_DIR/images.csv (counts per class, "
                    "mean and median area). Read-only.")
    measure.add_argument("project", metavar="PROJECT", help="project folder")
    measure.add_argument("out_dir", metavar="OUT_DIR", help="output folder (created)")
    measure.add_argument("--source", default="labels", choices=("labels", "predictions", "both"),
                         help="what to measure (default: labels)")
    measure.add_argument("--pixel-size", type=float, default=None, metavar="UM",
                         help="micrometres per pixel (default: the project's pixel_size_um "
                              "setting, else sizes in pixels)")
    measure.add_argument("--version", default=None, help="model version (default: latest)")
    measure.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    measure.set_defaults(func=_cmd_measure)
    imp = sub.add_parser(
        "import", help="import masks made elsewhere (Fiji, ilastik, Cellpose) as labels",
        description="Match the mask files of MASK_DIR to the project's images by name (also "
                    "<name>_mask, _masks, _labels, _label, _seg, _cp_masks), convert 0/255 "
                    "masks and instance id images as the project's classes require, and submit "
                    "each as a whole-image label. Prints what was imported, converted and "
                    "skipped, and why. Exit code 0 when at least one mask was imported.")
    imp.add_argument("project", metavar="PROJECT", help="project folder")
    imp.add_argument("mask_dir", metavar="MASK_DIR", help="folder of mask files (TIFF, PNG)")
    imp.add_argument("--replace", action="store_true",
                     help="overwrite labels already in the project (default: skip those images)")
    imp.add_argument("--dry-run", action="store_true",
                     help="report what would be imported; write nothing (opens read-only)")
    imp.set_defaults(func=_cmd_import)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args))
    except ValueError as exc:  # bad input: a clear message, no traceback
        print(f"activeseg: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
