"""The ``segdesk bench`` sub-commands: loop, latency, ui, large, brush.

Each writes RESULT.json (machine-readable) and RESULT.png (for people) and prints a one-line
summary on stdout; per-image progress goes to stderr. Heavy imports (torch, Qt) happen only inside
the command that needs them, so ``segdesk --help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from segdesk.cli.argtypes import positive_float as _positive_float
from segdesk.cli.argtypes import positive_int as _positive_int
from segdesk.cli.common import EXIT_USAGE
from segdesk.core import storage
from segdesk.core.errors import SegdeskError


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give sizes in pixels separated by commas, e.g. 512,1024") from None
    if not sizes or min(sizes) < 16:
        raise argparse.ArgumentTypeError(f"{text!r}: sizes must be at least 16 pixels")
    return sizes


def _engines(text: str) -> list[str]:
    engines = [e.strip() for e in text.split(",") if e.strip()]
    if "torch" not in engines:
        engines.insert(0, "torch")  # the reference every ratio and Dice is taken against
    unknown = [e for e in engines if e not in ("torch", "onnx")]
    if unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: engines are torch and onnx, not {', '.join(unknown)}")
    return engines


def parse_overrides(items: list[str]) -> dict:
    """``key=value`` pairs for TrainConfig fields, converted to each field's type."""
    from segdesk.ml.config import TrainConfig

    fields = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise SegdeskError(f"--set {item!r}: use KEY=VALUE with KEY one of {', '.join(sorted(fields))}")
        kind = fields[key]
        text = text.strip()
        try:
            if text.lower() in ("none", "auto") and "None" in kind:
                value = None
            elif "bool" in kind:
                value = text.lower() in ("1", "true", "yes", "on")
            elif "float" in kind:
                value = float(text)
            elif "int" in kind:
                value = int(text)
            else:
                value = text
        except ValueError:
            raise SegdeskError(f"--set {item!r}: {text!r} is not a valid value for {key} ({kind})") from None
        out[key] = value
    return out


def _done(result_path: Path, summary: str) -> int:
    print(f"{summary}; wrote {result_path} and {result_path.with_suffix('.png')}")
    return 0


# ----- commands


def cmd_loop(args) -> int:
    from segdesk.bench import loop

    seconds = args.train_seconds if args.train_steps is None else None
    result = loop.run(args.data, args.out, images=args.images, train_seconds=seconds,
                      train_steps=args.train_steps, device=args.device, init=args.init, seed=args.seed,
                      overrides=parse_overrides(args.set or []), postprocess=not args.no_postprocess,
                      keep=args.keep, threads=args.threads, on_image=lambda r: _err(loop_progress_line(r)),
                      order=args.order, clicks=args.clicks, pretrain_steps=args.pretrain_steps or 0)
    return _done(Path(args.out), loop_summary_line(result))


def loop_progress_line(r: dict) -> str:
    """One image of ``bench loop``: Dice of what was shown, correction / scratch effort in both
    measures, the proposing model (marked when its proposal was withheld) and the training after."""
    model = (r["checkpoint"] or "-") + (" withheld" if r.get("withheld") else "")
    return (f"[{r['index']:3d}] {r['image'][:24]:24s} Dice {r['dice']:.3f}  E/S "
            f"{r['effort']:7.0f}/{r['scratch_effort']:<7.0f} region {r['region_effort']:7.0f}/"
            f"{r['region_scratch_effort']:<7.0f} model {model:>14}  "
            f"trained {r['train_steps']} steps in {r['train_s']:.1f} s"
            + (f"  NoC@90 {r['noc90']}" if "noc90" in r else ""))


def loop_summary_line(result: dict) -> str:
    """The run in one line: both effort measures, last-ten Dice of what was shown and of the model's
    own proposals, and the first image whose proposal was shown."""
    first = result.get("first_shown")
    return (f"effort ratio {result['effort_ratio']} (region measure {result.get('region_effort_ratio')}), "
            f"Dice of the last ten {result['dice_last10']} shown, {result.get('dice_last10_model')} the "
            f"model's own, first proposal shown at image {first if first is not None else 'never'}, "
            f"{result['images']} images in {result['total_s']:.0f} s" + (
                f"; NoC@90 {result['noc90_1_10']} / {result['noc90_11_20']} / {result['noc90_21_30']} over "
                f"images 1-10 / 11-20 / 21-30, {result['setbacks']} setbacks in {result['clicks_total']} clicks, "
                f"effort ratio after clicks {result['effort_ratio_after_clicks']}"
                if result.get("clicks") else ""))


def cmd_clicks(args) -> int:
    from segdesk.bench import click_replay

    def progress(image: dict) -> None:
        _err(f"[{image['index']:3d}] {image['image'][:24]:24s} model {image['checkpoint'] or '-':>6}  NoC@90 "
             + "  ".join(f"{v} {image[v]['noc90']}" for v in variants))

    variants = args.variant or ["default"]
    result = click_replay.replay(args.run, args.project, args.out, variants, on_image=progress)
    for variant, s in result["variants"].items():
        print(f"{variant}: NoC@90 {s['noc90_1_10']} / {s['noc90_11_20']} / {s['noc90_21_30']} over images "
              f"1-10 / 11-20 / 21-30 (mean {s['noc90_mean']}), Dice after 1 / 3 / 5 clicks {s['dice_after_1']} / "
              f"{s['dice_after_3']} / {s['dice_after_5']}, {s['setbacks']} setbacks in {s['clicks_total']} clicks, "
              f"effort ratio after clicks {s['effort_ratio_after_clicks']}")
    print(f"wrote {args.out}")
    return 0


def cmd_latency(args) -> int:
    from segdesk.bench import latency

    def line(r: dict) -> str:
        engines = ", ".join(f"{name} {e['seconds']:.3f} s ({e['gflop_per_s']:.1f} GFLOP/s, "
                            f"x{e['speedup_vs_torch']:.2f}, Dice {e['dice_vs_torch']:.4f}"
                            + (f", a click {e['click_s']:.3f} s" if e.get("click_s") is not None else "") + ")"
                            for name, e in r["engines"].items())
        return f"{r['size']:5d} px, {r['gflop']:.0f} GFLOP: {engines}"

    result = latency.run(args.out, sizes=args.sizes, device=args.device, repeats=args.repeats,
                         base_width=args.base_width, threads=args.threads, engines=args.engines,
                         on_size=lambda r: _err(line(r)))
    for note in result["engine_notes"]:
        _err(note)
    rows = ", ".join(f"{r['size']}: {r['seconds']:.2f} s" for r in result["sizes"])
    clicks = ", ".join(f"{r['size']}: {r['click_s']:.3f} s" for r in result["sizes"] if r.get("click_s") is not None)
    return _done(Path(args.out), f"segment time ({result['engine']}) {rows} on {result['device']}"
                                 + (f"; a click's answer {clicks}" if clicks else ""))


def cmd_ui(args) -> int:
    from segdesk.bench import ui

    if not (Path(args.data) / "images").is_dir():
        raise SegdeskError(f"{args.data} needs images/ and masks/ folders")
    result = ui.run(Path(args.data), Path(args.out), seconds=args.seconds, device=args.device, init=args.init,
                    busy_cores=args.busy_cores)
    return _done(Path(args.out), f"GUI event loop: longest stall {result['event_loop_max_ms']} ms, "
                                 f"99th percentile {result['event_loop_p99_ms']} ms; {result['proposals']} proposals "
                                 f"shown, {result['withheld']} withheld, {result['switches_shown']} image switches, "
                                 f"{result['accepts']} accepts, {result['clicks_answered']} clicks answered "
                                 f"(median {result['click_latency_s']['median']} s)")


def cmd_large(args) -> int:
    from segdesk.bench import large

    result = large.run(Path(args.out), images=args.images, wait_s=args.wait, device=args.device,
                       trace=args.trace_stalls, segment_up_to=args.segment_up_to)
    rows = ", ".join(f"{r['image']}: peak {max((p['peak_rss_gb'] for p in r.get('phases', {}).values()), default=0)} GB, "
                     f"longest stall {max((p['longest_stall_ms'] for p in r.get('phases', {}).values()), default=0)} ms"
                     f"{'' if r.get('proposal_shown') else ' (no proposal: ' + str(r.get('segment_error') or r.get('error')) + ')'}"
                     for r in result["images"])
    return _done(Path(args.out), f"large images: {rows}; peak RSS {result['peak_rss_gb']} GB "
                                 f"(goal {result['peak_rss_goal_gb']}), longest stall {result['longest_stall_ms']} ms")


def _large_images(text: str):
    from segdesk.bench.large import parse_specs

    try:
        return parse_specs(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_brush(args) -> int:
    from segdesk.bench import brush

    result = brush.run(size=args.size)
    out = Path(args.out)
    storage.atomic_write_json(out, result)
    brush_plot(result, out.with_suffix(".png"))
    return _done(out, f"brush segment on {args.size}x{args.size}: median {result['median_ms']} ms, "
                      f"99th percentile {result['p99_ms']} ms")


def brush_plot(result: dict, path: Path) -> None:
    from segdesk.bench import plot as charts

    keys = ("median_ms", "p99_ms", "max_ms")
    charts.save([charts.Panel(
        f"one brush segment on a {result['image_size'][0]} px image (ms; a frame is 16 ms)",
        [charts.Series("ms", [result[k] for k in keys], bars=True)],
        y_range=(0.0, max(20.0, result["max_ms"] * 1.1)),
        x_ticks=[(i + 1, k.removesuffix("_ms")) for i, k in enumerate(keys)],
        hlines=[(16.0, "16 ms")])], path)


def cmd_bench(args) -> int:
    """``segdesk bench`` without a benchmark: a bad command line (exit 2), with the list to choose from."""
    args.bench_parser.print_help(sys.stderr)
    return EXIT_USAGE


def add_bench_parser(bench: argparse.ArgumentParser) -> None:
    """Fill the ``bench`` parser with its sub-commands (``segdesk.cli`` creates it)."""
    bench.set_defaults(func=cmd_bench, bench_parser=bench)
    sub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK")

    def add(name, func, help_, description="", out_help="where to write the JSON result (the PNG plot goes beside it)"):
        p = sub.add_parser(name, help=help_, description=description or help_)
        p.set_defaults(func=func)
        p.add_argument("--out", required=True, type=Path, metavar="RESULT.json", help=out_help)
        return p

    p = add("loop", cmd_loop, "simulated clinician: correction effort while the model learns",
            "A simulated clinician labels N images of a folder with images/ and masks/ (same stems; "
            "masks 0 = background, 1..K = class) in the app's loop: propose, measure the correction "
            "effort against the true mask, accept it, train for a fixed budget, next image. Reports "
            "effort ratio sum(E)/sum(S) (1.0 = no better than drawing from scratch) and the mean Dice "
            "of the last ten proposals.")
    p.add_argument("--data", required=True, type=Path, metavar="DIR", help="folder with images/ and masks/")
    p.add_argument("--images", type=_positive_int, default=30, metavar="N", help="images to label (default 30)")
    p.add_argument("--train-seconds", type=_positive_float, default=30.0, metavar="T",
                   help="training time after each image (default 30)")
    p.add_argument("--train-steps", type=_positive_int, metavar="S",
                   help="train S steps after each image instead of T seconds (machine-independent)")
    p.add_argument("--device", metavar="D", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--init", default="scratch", metavar="scratch|starter|DIR",
                   help="start from fresh weights (default, as new projects do), the bundled nuclei "
                        "model (dsb2018), or the current checkpoint of a models folder")
    p.add_argument("--seed", type=int, default=0, metavar="K", help="image order and training seed (default 0)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="training setting to change, e.g. --set lr=3e-3 --set base_width=8 (repeatable)")
    p.add_argument("--no-postprocess", action="store_true",
                   help="show every proposal as the model makes it: no post-processing, never withheld")
    p.add_argument("--threads", type=_positive_int, metavar="N",
                   help="CPU threads for torch (default: all cores but one, as the app)")
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep the generated project in DIR (must not exist)")
    p.add_argument("--order", choices=("given", "uncertain"), default="given",
                   help="which image is labelled next: given (the seed's order, default) or uncertain (the "
                        "current model's least sure of up to 8 remaining images drawn at random)")
    p.add_argument("--pretrain-steps", type=_positive_int, metavar="N",
                   help="after the first image, learn N steps from the images alone (segdesk pretrain) "
                        "before training on its label")
    p.add_argument("--clicks", action="store_true",
                   help="also click each proposal toward the truth (DESIGN.md clicks protocol, up to 20 clicks) "
                        "and report NoC@90 over images 1-10, 11-20 and 21-30")

    p = add("latency", cmd_latency, "time from Segment to mask per image size, with FLOPs and FLOP/s")
    p.add_argument("--sizes", type=_sizes, default=[512, 1024, 2048, 4096], metavar="LIST",
                   help="square image sizes in pixels (default 512,1024,2048,4096)")
    p.add_argument("--device", metavar="D", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--repeats", type=_positive_int, default=3, metavar="N",
                   help="timed runs per size after one warm-up (median reported; default 3)")
    p.add_argument("--base-width", type=_positive_int, metavar="C", help="U-Net width (default: the training default)")
    p.add_argument("--threads", type=_positive_int, metavar="N",
                   help="CPU threads for torch and ONNX Runtime (default: all cores but one, as the app)")
    p.add_argument("--engines", type=_engines, default=["torch", "onnx"], metavar="LIST",
                   help="engines side by side: torch (today's path), onnx (ONNX Runtime, CPU only); "
                        "default torch,onnx")

    p = add("ui", cmd_ui, "GUI event-loop stalls while training and proposals run, and one brush segment")
    p.add_argument("--data", required=True, type=Path, metavar="DIR", help="folder with images/ and masks/")
    p.add_argument("--seconds", type=_positive_float, default=60.0, metavar="S", help="how long to run (default 60)")
    p.add_argument("--device", metavar="D", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--init", choices=("bundled", "scratch"), default="bundled",
                   help="bundled (default): start from the bundled nuclei model, so proposals run from the "
                        "first second; scratch: no model until training saves one")
    p.add_argument("--busy-cores", type=int, default=0, metavar="N",
                   help="keep N cores busy with other processes meanwhile (default 0)")

    p = add("large", cmd_large, "open, zoom, pan, paint, segment and accept very large images in the window",
            "Generates a 10,000 x 10,000 RGB PNG and a 20,000 x 20,000 16-bit gray TIFF (not kept), opens "
            "each in the real window as a one-image project with the bundled nuclei model, zooms, pans, "
            "paints, waits for the proposal and accepts it; reports peak resident memory and the longest "
            "GUI stall per phase.")
    p.add_argument("--images", type=_large_images, default=None, metavar="LIST",
                   help="images to generate, KIND:SIDE with KIND rgb (PNG) or gray (16-bit TIFF); "
                        "default rgb:10000,gray:20000")
    p.add_argument("--wait", type=_positive_float, default=1800.0, metavar="S",
                   help="longest wait for an image to open or its proposal to arrive (default 1800)")
    p.add_argument("--device", default="cpu", metavar="D", help="cpu (default), auto, cuda, cuda:N or mps")
    p.add_argument("--segment-up-to", type=_positive_int, default=None, metavar="PIXELS",
                   help="press Segment only on images of at most PIXELS pixels (default: all); the others "
                        "are opened, zoomed, panned, painted and accepted")
    p.add_argument("--trace-stalls", action="store_true",
                   help="sample the GUI thread's stack while it is late, to place each stall (stall_stacks)")

    p = add("clicks", cmd_clicks, "the clicks protocol replayed on a kept loop run, variant by variant",
            "Replays the clicks protocol (bench loop --clicks) on a run of bench loop kept with --keep: "
            "each image proposed by the checkpoint the run showed it and clicked toward its accepted "
            "label, once per variant of the click answer. Clicks never feed training, so the variants "
            "are compared on the run's own models; the default variant reproduces a --clicks run.",
            out_help="where to write the JSON result")
    p.add_argument("--run", required=True, type=Path, metavar="RESULT.json", help="the loop run's result")
    p.add_argument("--project", required=True, type=Path, metavar="DIR", help="the folder the run kept (--keep DIR)")
    p.add_argument("--variant", action="append", metavar="NAME",
                   help="default, no-fit, no-tilt, whole-window or both-ways (repeatable; default: default)")
    p.set_defaults(variant=None)

    p = add("brush", cmd_brush, "time of one brush segment on a large image (label edit, overlay, repaint)")
    p.add_argument("--size", type=_positive_int, default=4096, metavar="PX", help="image side in pixels (default 4096)")
