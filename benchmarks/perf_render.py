"""perf_report, the output: achieved GFLOP/s, the PNG plot and the Markdown of the README section and
docs/performance.md."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from perf_measure import Row
from scaseg.fileio import atomic_path


def gflops_per_s(gmac: float, ms: float) -> float:
    """Achieved GFLOP/s with 1 MAC = 2 FLOPs."""
    return 2.0 * gmac / (ms / 1000.0)


def plot(results: list[dict[str, Any]], peak: float, dest: Path, title: str) -> None:
    """Latency and achieved GFLOP/s vs input pixels, strip vs vanilla; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mpix = [r["size"][0] * r["size"][1] / 1e6 for r in results]
    names = [f"{r['size'][0]}x{r['size'][1]}" for r in results]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for attention, style in (("strip", "o-"), ("vanilla", "s--")):
        ms = [r[attention]["median_ms"] for r in results]
        ax1.plot(mpix, ms, style, label=f"{attention} attention")
        ax2.plot(mpix, [gflops_per_s(r[attention]["gmacs"], r[attention]["median_ms"]) for r in results], style,
                 label=f"{attention} attention")
    for x, name, r in zip(mpix, names, results):
        ratio = r["vanilla"]["median_ms"] / r["strip"]["median_ms"]
        ax1.annotate(f"{name}\nvanilla/strip {ratio:.2f}x", (x, r["vanilla"]["median_ms"]), fontsize=7,
                     textcoords="offset points", xytext=(4, 4))
    ax1.set(xlabel="input megapixels", ylabel="median latency (ms)", title="latency, ONNX Runtime CPU fp32")
    ax2.axhline(peak, color="gray", lw=1, ls=":", label=f"ORT MatMul peak {peak:.0f} GFLOP/s")
    ax2.set(xlabel="input megapixels", ylabel="GFLOP/s (2 x counted MACs / latency)", title="achieved throughput",
            ylim=(0, peak * 1.1))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right" if ax is ax2 else "upper left")
    ax1.margins(x=0.15, y=0.12)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(str(tmp), format="png", dpi=110)
    plt.close(fig)


def _f(value: Optional[float], spec: str) -> str:
    return "-" if value is None or value != value else format(value, spec)


def backend_markdown(rows: list[Row], table_gmacs: float, peak: float) -> str:
    head = ("| backend | precision | threads | median ms | FPS | size (MB) | mIoU | GFLOP/s | % of MatMul peak "
            "| peak RSS (MB) |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    base = rows[0].median_ms
    for r in rows:
        g = gflops_per_s(table_gmacs, r.median_ms)
        lines.append(f"| {r.backend} | {r.precision} | {r.threads} | {r.median_ms:.1f} ({base / r.median_ms:.2f}x) | "
                     f"{1000 / r.median_ms:.2f} | {r.size_mb:.1f} | {_f(r.miou, '.2f')} | {g:.1f} | "
                     f"{100 * g / peak:.0f}% | {_f(r.rss.get('peak_mb'), '.0f')} |")
    return "\n".join(lines)


def sweep_markdown(results: list[dict[str, Any]], peak: float) -> str:
    lines = ["| input | strip ms | vanilla ms | vanilla / strip | GMACs strip / vanilla | GFLOP/s strip / vanilla "
             "| % of MatMul peak (strip) | peak RSS MB strip / vanilla |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        s, v = r["strip"], r["vanilla"]
        gs, gv = gflops_per_s(s["gmacs"], s["median_ms"]), gflops_per_s(v["gmacs"], v["median_ms"])
        lines.append(f"| {r['size'][0]}x{r['size'][1]} | {s['median_ms']:.0f} | {v['median_ms']:.0f} | "
                     f"{v['median_ms'] / s['median_ms']:.2f}x | {s['gmacs']:.2f} / {v['gmacs']:.2f} | "
                     f"{gs:.1f} / {gv:.1f} | {100 * gs / peak:.0f}% | "
                     f"{s['rss']['peak_mb']:.0f} / {v['rss']['peak_mb']:.0f} |")
    return "\n".join(lines)


def nominal_peak_sentence(m: dict[str, Any], peak: float) -> str:
    """What the clock the guest reports says about the peak: no theoretical ceiling where the MatMul beats it."""
    nominal = (f"{m['cores']} cores x {m['ghz']:.2f} GHz x {m['flops_per_cycle']} FLOP/cycle = "
               f"{m['theoretical_gflops']:.0f} GFLOP/s")
    if peak > m["theoretical_gflops"]:
        return (f"No theoretical peak is quoted: the {m['ghz']:.2f} GHz the guest reports is a nominal clock the "
                f"cores run above ({nominal} is less than the MatMul measured).")
    return f"At the nominal clock the guest reports, {nominal} (a lower bound where the cores boost)."


def render(report: dict[str, Any], rows: list[Row], plot_link: str, *, full: bool, doc_link: str = "") -> str:
    """The Markdown of the results; ``full`` adds the method, machine and caveats of docs/performance.md."""
    m, mm, plan = report["machine"], report["matmul"], report["plan"]
    peak = mm["gflops"]
    h, w = plan["imgsz"]
    model = report["model"]
    out = []
    if full:
        out += ["# Performance on a CPU", "",
                f"Generated by `{report['command']}` on {m['date']}; every figure below comes from that one run. "
                "Do not edit by hand: rerun the script.", ""]
    out += [
        f"**{model['variant']}** ({model['source']}) on **ONNX Runtime {m['onnxruntime']} CPU**, {m['cpu']} "
        f"({m['family_model']}), {m['cores']} cores, {report['threads']} threads, batch 1. "
        "Median latency of rounds interleaved across the configurations; FPS = 1000 / median ms; "
        f"(Nx) = speed relative to ONNX Runtime fp32 with {report['threads']} threads.",
        "",
        f"**Backend x precision** at {h}x{w} ({report['table_gmacs']:.2f} GMACs = "
        f"{2 * report['table_gmacs']:.2f} GFLOPs per image), median of {plan['runs']} rounds"
        + (f", mIoU (%) on {report['miou_images']} images of {report['data']}" if report["data"] else ", no mIoU (no --data)")
        + ":",
        "",
        backend_markdown(rows, report["table_gmacs"], peak),
        "",
        f"**Latency vs input resolution**, strip vs vanilla attention, fp32 ONNX Runtime (static export per size; "
        f"both randomly initialised, weights do not change the arithmetic), median of {plan['sweep_runs']} rounds:",
        "",
        f"![strip vs vanilla latency vs resolution]({plot_link})",
        "",
        sweep_markdown(report["sweep"], peak),
        "",
        f"**Peak**: ONNX Runtime fp32 MatMul {mm['n']}x{mm['n']}x{mm['n']} reaches **{peak:.1f} GFLOP/s** "
        f"(median; best {mm['best_gflops']:.1f}) with {report['threads']} threads, the ceiling the % columns use. "
        + nominal_peak_sentence(m, peak) + " "
        "GFLOP/s = 2 x counted MACs / median latency (1 MAC = 2 FLOPs; `scaseg.stats` counts MACs, convolutions "
        "and matrix products only, and calls them GFLOPs); % = share of the MatMul peak. "
        "Peak RSS: whole process (Python, libraries, model, one run), measured in a fresh subprocess per "
        "configuration.",
    ]
    if not full:
        if model["untrained"]:
            out += ["", "The model is untrained (no checkpoint was found): the speed and memory figures are real, "
                    "the mIoU column is not meaningful."]
        out += ["", f"Method, machine and caveats: [docs/performance.md]({doc_link}). A shared, noisy "
                f"{m['cores']}-core virtual machine: compare ratios within one run, not absolute numbers across runs."]
        return "\n".join(out)

    notes = [f"- {r.backend} {r.precision}: {r.note}" for r in rows if r.note]
    rss_rows = ["| configuration | bare interpreter (MB) | after loading (MB) | peak (MB) |", "|---|---|---|---|"]
    rss_rows += [f"| {r.backend} {r.precision} {r.threads} thread(s) {h}x{w} | {r.rss['bare_mb']:.0f} | {r.rss['loaded_mb']:.0f} | "
                 f"{r.rss['peak_mb']:.0f} |" for r in rows]
    for s in report["sweep"]:
        for attention in ("strip", "vanilla"):
            rss = s[attention]["rss"]
            rss_rows.append(f"| onnxruntime fp32 {attention} {s['size'][0]}x{s['size'][1]} | {rss['bare_mb']:.0f} | "
                            f"{rss['loaded_mb']:.0f} | {rss['peak_mb']:.0f} |")
    out += [
        "", "## Peak memory", "",
        f"Each configuration in a subprocess of its own: VmRSS after `import numpy` (bare), after opening the model "
        f"with `scaseg.runtime.backends.open_backend` (loaded), and VmHWM after {plan['probe_runs']} run(s) (peak).",
        "", *rss_rows,
        "", "## Notes on the configurations", "", *(notes or ["- none"]),
        "", "## Machine", "",
        f"- CPU: {m['cpu']} ({m['family_model']}), hypervisor {m['hypervisor'] or 'none reported'}, "
        f"{m['cores']} cores usable by this process ({m['threads_per_core']} thread(s) per core as the guest sees it), "
        f"{m['memory_gib']:.0f} GiB RAM, SIMD flags: {m['simd']}.",
        f"- Clock: {m['ghz']:.3f} GHz from {m['clock_source']}.",
        f"- fp32 peak at the nominal clock = cores x GHz x FLOP/cycle = {m['cores']} x {m['ghz']:.3f} x "
        f"{m['flops_per_cycle']} = {m['theoretical_gflops']:.0f} GFLOP/s, taking {m['flops_per_cycle']} FLOP/cycle "
        "for AVX2 FMA fp32 (2 FMA pipes x 8 lanes x 2 FLOPs); not a ceiling where the cores boost." + (
            " The CPU also reports AVX-512: AMD Zen 4 (family 25) executes it as two 256-bit halves, so 32 stays "
            "its fp32 figure; a core with two full 512-bit FMA units would reach 64 (pass --flops-per-cycle)."
            if "avx512f" in m["simd"] else ""),
        f"- Python {m['python']}, ONNX Runtime {m['onnxruntime']}, PyTorch {report.get('torch', '?')}; load average "
        f"(1 min) {m['load_before'][0]:.1f} before and {report['load_after'][0]:.1f} after the run.",
        f"- Wall time of the run: {report['wall_s'] / 60:.1f} min.",
        "", "## Method", "",
        f"- Model: {model['source']}. fp32 ONNX with `scaseg.export.onnx_export.to_onnx` (what `scaseg-export` "
        "runs: static shape, onnxsim, decomposed strip attention, query tiling `auto`); fp16 and int8 with "
        f"`scaseg.calibration.precision.make_precision` (int8: Q/DQ placement `cpu`, {plan['calib_num']} calibration "
        "images, accuracy guard <= 1 mIoU point on held-out images); PyTorch eager runs the checkpoint through "
        "`scaseg.runtime.backends.torch` (inference_mode).",
        f"- Timing: every configuration of a table is opened once, warmed up, then timed in interleaved rounds "
        f"(A, B, C, D, A, B, ...) on the same random input, each timed run right after an untimed run of the same "
        "configuration (an ONNX Runtime session's pool threads spin for a while after its run, and a run of another "
        "session timed then shares the cores with them: scaseg-t at 512x512, ORT fp32 / int8 sessions alternating, "
        "147.5 / 101.9 ms per run against 118.7 / 77.5 ms, 2026-12-02; `benchmarks/perf_measure.interleaved`); "
        "the median per configuration is reported, "
        f"`scaseg.runtime.timing.summarize`. {report['threads']} intra-op threads for ONNX Runtime and PyTorch, "
        "plus 1-thread rows of ONNX Runtime fp32 and PyTorch (PyTorch's thread count is process-wide: it is set "
        "before each of its calls). "
        "Model-only: no decoding, preprocessing or argmax (scaseg-bench reports end-to-end figures).",
        "- mIoU: `scaseg.runtime.bench.evaluate` (the scaseg-bench code), labels at full resolution, "
        + (f"{report['miou_images']} images of {report['data']}." if report["data"] else "not measured (no --data)."),
        "- Achieved GFLOP/s: 2 x MACs from `scaseg.stats.measure` (meta-device count of convolutions and matrix "
        "products) / median latency. For int8 and fp16 it is the fp32-equivalent rate. The MatMul peak is what "
        "ONNX Runtime's own fp32 GEMM reaches on this machine with the same threads, a practical ceiling.",
        "", "## Caveats", "",
        f"- A shared, noisy {m['cores']}-core virtual machine: other jobs ran at the same time (load averages above). "
        "Medians and interleaving make the ratios within one table trustworthy; absolute figures move between runs.",
        "- The cores are virtual CPUs; the host may run them as hyper-threads of one physical core, and the clock "
        "the guest reports is nominal: boost clocks above it are invisible to the guest, so a large MatMul can "
        "exceed the nominal-clock figure (this run's did, see Peak). The MatMul rate is the ceiling that counts.",
        "- ONNX Runtime CPU has few fp16 kernels: an fp16 model mostly runs through casts, so fp16 is a GPU "
        "format; int8 speed depends on VNNI support and on how much of the graph the Q/DQ placement covers.",
        *_thread_caveat(rows),
        "- PyTorch eager runs its ops on OpenMP threads that meet at a barrier after every op; when other jobs "
        "keep the cores busy, one of the threads is often descheduled and each small op waits for it. Compare its "
        "row with all threads against its 1-thread row: the gap is the price of a busy machine, not of the model.",
        "- Vanilla and strip differ only in the decoder's four cross-attention modules; the encoder dominates the "
        "cost of scaseg-t, so the end-to-end gap is smaller than the attention-only saving in `scaseg.stats`.",
    ]
    if model["untrained"]:
        out.append("- The model is untrained (no checkpoint found): speed figures are real, mIoU figures are not.")
    return "\n".join(out) + "\n"


def _thread_caveat(rows: list[Row]) -> list[str]:
    """A caveat line when this run's 1-thread rows beat the all-threads rows of the same model (a busy machine)."""
    faster = [f"{one.backend} {one.precision} {one.median_ms:.0f} ms with 1 thread vs {many.median_ms:.0f} ms with "
              f"{many.threads}" for one in rows if one.threads == 1
              for many in rows if many.threads > 1 and (many.path, many.backend) == (one.path, one.backend)
              and one.median_ms < many.median_ms]
    if not faster:
        return []
    return [f"- In this run fewer threads were faster ({'; '.join(faster)}): other jobs held the cores, so a second "
            "thread mostly waited; rerun on an idle machine for what the extra threads can give."]
