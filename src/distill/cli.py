"""The ``distill`` command line: demo, run, validate, eval, export, bench, generate ..."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Turn a large teacher into a small, fast student.")
from distill.diffusion.cli import app as diffusion_app  # noqa: E402
from distill.export.targets import precision_help, target_help  # noqa: E402  (light: the registry, no runtimes)

app.add_typer(diffusion_app, name="diffusion")
# tables are wide: outside a terminal (logs, CI) rich would wrap them at 80 columns
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)

DEFAULT_CACHE = Path(os.environ.get("DISTILL_CACHE", Path.home() / ".cache" / "distill"))


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _user_errors():
    """The exceptions that mean 'your input is wrong' (one clear message, exit 2)."""
    from distill.artifacts import ArtifactError
    from distill.recipe import RecipeError
    from distill.registry import UnknownNameError

    return (RecipeError, ArtifactError, UnknownNameError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
            PermissionError, ValueError)


TRUST_CODE_HELP = ("let a model file name its architecture as code to import and run (package.module:callable), "
                   "like Hugging Face's trust_remote_code; only for files from someone you trust")


def _trust_recipe_code(recipe) -> None:
    """``distill run --trust-code``: every model spec of the recipe may name user code in its checkpoint."""
    specs = [recipe.student] + ([spec for _, spec in recipe.teacher.members()] if recipe.teacher is not None else [])
    for spec in specs:
        spec.trust_code = True


def metrics_table(title: str, rows: list[tuple[str, dict[str, Any]]]) -> Table:
    from distill.report.markdown import metrics_rows

    headers, cells = metrics_rows(rows)
    table = Table(title=title, title_justify="left")
    for index, header in enumerate(headers):
        table.add_column(header, justify="left" if index == 0 else "right")
    for row in cells:
        table.add_row(*row)
    return table


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="run folder (replaced)"),
    cache_dir: Path = typer.Option(DEFAULT_CACHE, help="where the trained teacher is kept for reuse"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Distil a CNN teacher into a >10x smaller MLP on scikit-learn's digits and compare."""
    from distill.demo import run_demo

    try:
        results = run_demo(out, cache_dir, progress=progress, console=console)
    except _user_errors() as exc:
        _fail(str(exc))
    console.print(metrics_table("distill demo: digits, test split", list(results.items())))
    console.print(f"Report: {out / 'report.md'}")


@app.command()
def run(
    recipe: Path = typer.Argument(..., help="recipe YAML"),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. train.epochs=3"),
    resume: bool = typer.Option(False, "--resume", help="continue from the run folder's latest checkpoint"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing run folder"),
    progress: bool = typer.Option(True, help="show progress bars"),
    num_processes: int = typer.Option(1, "--num-processes", min=1, help="data-parallel processes on this machine (torchrun)"),
    trust_code: bool = typer.Option(False, "--trust-code", help=TRUST_CODE_HELP),
) -> None:
    """Train the student a recipe describes, evaluate it, write the run folder."""
    from distill.recipe import load_recipe
    from distill.runner import run_recipe

    if num_processes > 1:
        _launch(num_processes, recipe, overrides or [], resume=resume, overwrite=overwrite, progress=progress,
                trust_code=trust_code)
        return
    try:
        loaded = load_recipe(recipe, overrides or [])
        if trust_code:
            _trust_recipe_code(loaded)
        result = run_recipe(loaded, resume=resume, overwrite=overwrite, progress=progress)
    except _user_errors() as exc:  # a NaN / inf loss too (distill.safety.NonFiniteError)
        _fail(str(exc))
    if result.metrics:  # only the main process evaluates
        rows = [(loaded.name, result.metrics)]
        if isinstance(result.metrics.get("teacher_metrics"), dict):
            rows.insert(0, (f"teacher ({result.metrics['teacher_metrics'].get('description')})",
                            result.metrics["teacher_metrics"]))
        console.print(metrics_table(f"{loaded.name}: test split", rows))
        console.print(f"Run folder: {result.run_dir}")


@app.command("fit")
def fit_(
    recipe: Path = typer.Argument(..., help="recipe YAML: its student names the family, its epochs the final budget"),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. train.epochs=10"),
    target: str = typer.Option("cpu", help="where candidates are timed: cpu (ONNX Runtime) | torch (eager)"),
    max_latency_ms: Optional[float] = typer.Option(None, help="budget: ms per batch of --batch on the target"),
    max_bytes: Optional[int] = typer.Option(None, help="budget: bytes of the deployed file"),
    batch: int = typer.Option(1, min=1, help="batch size the latency budget is for"),
    latency_margin: float = typer.Option(0.1, min=0.0, max=0.99, help="share of the latency budget held back for "
                                         "timing noise (candidates must time <= budget x (1 - margin))"),
    threads: int = typer.Option(1, min=1, help="threads for timing and training"),
    rungs: int = typer.Option(2, min=0, help="successive-halving rungs before the final training"),
    eta: int = typer.Option(2, min=2, help="keep 1/eta of the candidates per rung"),
    max_candidates: int = typer.Option(8, min=1, help="most candidates trained in the first rung"),
    out: Optional[Path] = typer.Option(None, help="fit folder (default: <recipe output_dir>-fit)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a fit folder distill made"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Find the best student of the recipe's family within a latency / size budget, train it, export it."""
    from distill.fitting import fit
    from distill.recipe import load_recipe

    try:
        result = fit(load_recipe(recipe, overrides or []), target=target, max_latency_ms=max_latency_ms,
                     max_bytes=max_bytes, batch=batch, latency_margin=latency_margin, threads=threads, rungs=rungs, eta=eta,
                     max_candidates=max_candidates, output_dir=out, overwrite=overwrite, progress=progress,
                     say=lambda message: console.print(message, highlight=False))
    except _user_errors() as exc:
        _fail(str(exc))
    table = Table(title=f"distill fit: {len(result.candidates)} candidates on {target}, batch {batch}",
                  title_justify="left")
    for column in ("candidate", "parameters", "ms / batch", "bytes", "stage", "validation", "test accuracy"):
        table.add_column(column, justify="left" if column in ("candidate", "stage") else "right")
    for candidate in sorted(result.candidates, key=lambda c: c.latency_ms):
        table.add_row(("[bold green]" if candidate.chosen else "") + candidate.name, f"{candidate.parameters:,}",
                      f"{candidate.latency_ms:.4f}", f"{candidate.bytes:,}", candidate.stage,
                      f"{candidate.scores[-1]:.2%}" if candidate.scores else "-",
                      f"{candidate.accuracy:.2%}" if candidate.accuracy is not None else "-")
    console.print(table)
    console.print(f"Fit folder: {result.fit_dir} (fit.json); winner run: {result.run.run_dir}", highlight=False)


@app.command("embed")
def embed(
    model: str = typer.Argument(..., help="'minilm' (the packaged all-MiniLM-L6-v2), a sentence-transformers folder, "
                                "or a static student's folder (distill.models.static.save_static)"),
    file: Path = typer.Argument(..., help="text file, one sentence a line (.gz read as gzip); empty lines are skipped"),
    out: Path = typer.Option(..., "--out", "-o", help="the .npy file to write: (N, D) float32, one row a sentence"),
    batch_size: int = typer.Option(64, min=1, help="sentences per batch"),
    threads: Optional[int] = typer.Option(None, min=1, help="torch threads (default: torch's)"),
    progress: bool = typer.Option(True, help="show a progress bar"),
) -> None:
    """Write the embeddings of a file of sentences as a .npy array."""
    import numpy as np
    import torch

    from distill.data.text import read_sentences
    from distill.models.hf import encode, load_text_encoder, token_lengths

    if out.suffix != ".npy":
        _fail(f"--out {out}: give a .npy path (numpy's format, read back with numpy.load)")
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        sentences, empty = read_sentences(file)
        if not sentences:
            raise ValueError(f"{file}: no sentences (only empty lines)")
        encoder, tokenizer = load_text_encoder(model)
        vectors = encode(encoder, tokenizer, sentences, batch_size=batch_size, progress=progress)
        limit = getattr(encoder, "max_length", None)
        truncated = int((token_lengths(encoder, tokenizer, sentences) > limit).sum()) if limit else 0
    except _user_errors() as exc:
        _fail(str(exc))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, vectors)
    console.print(f"{len(sentences):,} sentences -> {out} {vectors.shape} float32"
                  + (f"; {empty} empty line{'s' if empty != 1 else ''} skipped" if empty else "")
                  + (f"; {truncated} truncated at {limit} tokens" if truncated else ""), highlight=False)


@app.command("generate")
def generate_(
    model: Path = typer.Argument(..., help="a Hugging Face causal-LM folder (config.json, *.safetensors, tokenizer "
                                 "files; e.g. written by distill.llm.save_causal_lm) or a .gguf file"),
    prompt: str = typer.Option(..., "--prompt", "-p", help="the text to continue"),
    max_new_tokens: int = typer.Option(64, min=1, help="tokens to generate at most (fewer at the model's EOS)"),
    temperature: float = typer.Option(0.0, min=0.0, help="0: greedy (deterministic); > 0: sample at this temperature"),
    top_k: Optional[int] = typer.Option(None, min=1, help="sample among the k most likely tokens (default: all)"),
    seed: int = typer.Option(0, help="the sampling seed"),
    threads: Optional[int] = typer.Option(None, min=1, help="torch threads (default: torch's)"),
) -> None:
    """Continue PROMPT with a causal LM, streaming the text to stdout as it is generated."""
    import torch

    from distill.llm.generate import generate, load_generator

    if threads is not None:
        torch.set_num_threads(threads)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        lm, tokenizer = load_generator(model)
        write(prompt)
        generate(lm, tokenizer, prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                 seed=seed, on_text=write)
    except _user_errors() as exc:
        _fail(str(exc))
    write("\n")


@app.command("teacher-text")
def teacher_text(
    model: Path = typer.Argument(..., help="the teacher: a Hugging Face causal-LM folder or a .gguf file"),
    prompts: Path = typer.Argument(..., help="a .jsonl file of {\"prompt\": ...} or {\"messages\": [...]} lines, or a "
                                   "text file with one prompt a line"),
    out: Path = typer.Argument(..., help="the JSONL file to write: one {prompt, response, stop} line per prompt"),
    max_new_tokens: int = typer.Option(128, min=1, help="response tokens at most"),
    temperature: float = typer.Option(0.0, min=0.0, help="0: greedy (deterministic); > 0: sample at this temperature"),
    top_k: Optional[int] = typer.Option(None, min=1, help="sample among the k most likely tokens (default: all)"),
    seed: int = typer.Option(0, help="the sampling seed"),
    batch_size: int = typer.Option(16, min=1, help="prompts generated together"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a file distill made with other settings"),
    progress: bool = typer.Option(True, help="show a progress bar"),
    threads: Optional[int] = typer.Option(None, min=1, help="torch threads (default: torch's)"),
) -> None:
    """Generate the teacher's response to every prompt once, for sequence-level KD (Kim & Rush 2016):
    train a student on OUT with distill.llm.prompt_response_data(read_jsonl(OUT), tokenizer)."""
    import torch

    from distill.llm.generate import load_generator
    from distill.llm.sequence import generate_teacher_data, read_prompts

    if threads is not None:
        torch.set_num_threads(threads)
    try:
        examples = read_prompts(prompts)
        lm, tokenizer = load_generator(model)
        path = generate_teacher_data(lm, tokenizer, examples, out, max_new_tokens=max_new_tokens,
                                     temperature=temperature, top_k=top_k, seed=seed, batch_size=batch_size,
                                     overwrite=overwrite, progress=progress)
    except _user_errors() as exc:
        _fail(str(exc))
    stops = [json.loads(line).get("stop") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    console.print(f"teacher text: {path} - {len(stops):,} responses ({stops.count('length'):,} cut at "
                  f"{max_new_tokens} tokens)", highlight=False)


from distill.report_cli import report as _report_command  # noqa: E402  (kept apart, tested on its own app)

app.command("report")(_report_command)


def _launch(num_processes: int, recipe: Path, overrides: list[str], **flags: bool) -> None:
    """Run ``distill run`` in ``num_processes`` processes through torchrun (PyTorch's launcher)."""
    import subprocess

    from distill.recipe import load_recipe

    try:  # refuse a bad recipe here, once, rather than in every process
        load_recipe(recipe, overrides)
    except _user_errors() as exc:
        _fail(str(exc))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={num_processes}",
               "-m", "distill", "run", str(recipe), *overrides]
    command += [f"--{name.replace('_', '-')}" for name in ("resume", "overwrite", "trust_code") if flags[name]]
    command += [] if flags["progress"] else ["--no-progress"]
    console.print(f"launching: {' '.join(command[1:])}", highlight=False)
    code = subprocess.call(command)
    if code:
        raise typer.Exit(code)


@app.command()
def cache(
    recipe: Path = typer.Argument(..., help="recipe YAML with a teacher.cache section"),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. teacher.cache.k=8"),
    overwrite: bool = typer.Option(False, "--overwrite", help="rebuild a cache that does not match"),
    progress: bool = typer.Option(True, help="show progress bars"),
    trust_code: bool = typer.Option(False, "--trust-code", help=TRUST_CODE_HELP),
) -> None:
    """Run the teacher once over the training data and store its outputs (teacher.cache)."""
    from distill.recipe import check_files, load_recipe
    from distill.runner import build_teacher, load_data, model_input_shape, set_threads, teacher_cache

    try:
        loaded = load_recipe(recipe, overrides or [])
        if trust_code:
            _trust_recipe_code(loaded)
        check_files(loaded)
        if loaded.teacher is None or loaded.teacher.cache is None:
            _fail(f"{recipe}: 'distill cache' needs a teacher with a 'cache' section, e.g. "
                  "teacher: {checkpoint: ..., cache: {path: runs/cache/teacher, k: 8}}")
        set_threads(loaded.train.threads)
        train_set, _ = load_data(loaded)
        teacher = build_teacher(loaded, model_input_shape(train_set), train_set.num_classes)
        built = teacher_cache(loaded, teacher, train_set, progress=progress, overwrite=overwrite)
    except _user_errors() as exc:
        _fail(str(exc))
    from distill.report.markdown import human_bytes

    console.print(f"cache: {built.path} - {len(built):,} samples, k={built.k or 'dense'}, {built.dtype}, "
                  f"{built.bytes_per_sample:.1f} bytes/sample, {human_bytes(built.nbytes)} in all", highlight=False)


@app.command()
def inspect(
    model: str = typer.Argument(..., help="a distill model file (.safetensors) or a registered model name"),
    data: str = typer.Option("digits", help="dataset whose input shape and classes a named model is built for"),
    root: Optional[Path] = typer.Option(None, help="dataset folder (mnist, fashion_mnist, cifar10)"),
    params: str = typer.Option("{}", help='a named model\'s parameters as YAML, e.g. "{channels: [16, 32]}"'),
    depth: Optional[int] = typer.Option(None, help="show module paths down to this depth only"),
    trust_code: bool = typer.Option(False, "--trust-code", help=TRUST_CODE_HELP),
) -> None:
    """Print a model's module paths with their output shapes (for feature pairs and quantize patterns)."""
    import torch
    import yaml

    from distill.artifacts import load_model
    from distill.data import build_dataset
    from distill.models import build_model
    from distill.taps import list_paths

    try:
        if model.endswith(".safetensors"):
            built, spec = load_model(model, trust_code=trust_code)
            sample = torch.zeros(2, *spec["input_shape"])
        else:
            dataset = build_dataset(data, "test", root=root)
            built = build_model(model, input_shape=tuple(dataset.input_shape), num_classes=dataset.num_classes,
                                **(yaml.safe_load(params) or {}))
            sample = dataset.inputs[:2]
    except _user_errors() as exc:
        _fail(str(exc))
    table = Table(title=f"{type(built).__name__}: module paths (output shapes for a batch of 2)", title_justify="left")
    for column in ("path", "module", "output shape"):
        table.add_column(column)
    for path, kind, shape in list_paths(built, sample, max_depth=depth):
        table.add_row(path or "(model)", kind, "-" if shape is None else str(tuple(shape)))
    console.print(table)


@app.command()
def validate(
    recipe: Path = typer.Argument(..., help="recipe YAML"),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides"),
) -> None:
    """Check a recipe (schema, names, files) and print it resolved, without running it."""
    from distill.recipe import check_callables, check_files, load_recipe

    try:
        loaded = load_recipe(recipe, overrides or [])
        check_files(loaded)
        imported = check_callables(loaded)  # the recipe's own code: imported, as `distill run` would
    except _user_errors() as exc:
        _fail(str(exc))
    console.print(loaded.to_yaml(), highlight=False, markup=False)
    if imported:
        console.print(f"imported your code: {', '.join(imported)}", highlight=False)
    console.print(f"[green]ok[/]: {recipe} is valid")


@app.command("eval")
def eval_(
    model: Path = typer.Argument(..., help="a distill model file (.safetensors)"),
    data: str = typer.Option("digits", help="dataset name"),
    root: Optional[Path] = typer.Option(None, help="dataset folder (mnist, fashion_mnist, cifar10)"),
    teacher: Optional[Path] = typer.Option(None, help="teacher model file, for agreement and KL"),
    split: str = typer.Option("test", help="split to evaluate on"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the metrics here"),
    trust_code: bool = typer.Option(False, "--trust-code", help=TRUST_CODE_HELP),
) -> None:
    """Accuracy, agreement and KL with a teacher, ECE, parameters, bytes, latency."""
    from distill.artifacts import load_model
    from distill.data import build_dataset
    from distill.evaluation import check_model_fits, evaluate, predict

    try:
        student, spec = load_model(model, trust_code=trust_code)
        dataset = build_dataset(data, split, root=root)
        check_model_fits(spec, dataset.input_shape, dataset.num_classes, model_name=str(model), data_name=data)
        teacher_logits, rows = None, []
        if teacher is not None:
            teacher_model, teacher_spec = load_model(teacher, trust_code=trust_code)
            check_model_fits(teacher_spec, dataset.input_shape, dataset.num_classes, model_name=str(teacher),
                             data_name=data)
            teacher_logits = predict(teacher_model, dataset.inputs, what=f"model file {teacher}")
            rows.append((f"teacher ({teacher.name})", evaluate(teacher_model, dataset.inputs, dataset.targets, file=teacher)))
        metrics = evaluate(student, dataset.inputs, dataset.targets, teacher_logits=teacher_logits, file=model)
        from distill.runner import is_quantized

        if is_quantized(student):  # fake-quantized or packed: its true packed size
            from distill.quant import size_report

            metrics["quantized_bytes"] = size_report(student)["total_bytes"]
        rows.append((model.name, metrics))
    except _user_errors() as exc:
        _fail(str(exc))
    console.print(metrics_table(f"{data} {split} split", rows))
    if json_out is not None:
        json_out.write_text(json.dumps(dict(rows), indent=2))


@app.command("export")
def export_(
    checkpoint: Path = typer.Argument(..., help="a run folder from `distill run`, or its model.safetensors"),
    target: str = typer.Option(..., help=target_help()),
    precision: Optional[List[str]] = typer.Option(None, help=precision_help()),
    out: Optional[Path] = typer.Option(None, help="export folder (default: <run folder>/export)"),
    data: Optional[str] = typer.Option(None, help="held-out dataset (default: the run folder's recipe)"),
    root: Optional[Path] = typer.Option(None, help="dataset folder (mnist, fashion_mnist, cifar10)"),
    tolerance: Optional[float] = typer.Option(None, help="max |logit diff| vs eager PyTorch (overrides the precision's default)"),
    min_agreement: Optional[float] = typer.Option(None, help="min top-1 agreement with eager PyTorch (overrides the default)"),
    threads: int = typer.Option(1, min=1, help="torch and runtime threads for checks and latency"),
    samples: Optional[int] = typer.Option(None, min=1, help="held-out samples for parity and accuracy (default: all)"),
    trust_code: bool = typer.Option(False, "--trust-code", help=TRUST_CODE_HELP),
) -> None:
    """Export a student for a target, verify each variant against eager PyTorch, write model cards."""
    from distill.export import ExportOptions, Exporter, check_request, default_precisions, load_student

    command = ["distill", "export", str(checkpoint), "--target", target]
    for flag, value in (("--out", out), ("--data", data), ("--root", root), ("--tolerance", tolerance),
                        ("--min-agreement", min_agreement), ("--samples", samples)):
        command += [] if value is None else [flag, str(value)]
    command += [item for p in precision or [] for item in ("--precision", p)] + ["--threads", str(threads)]
    try:
        check_request(target, precision or [])
        student = load_student(checkpoint, data=data, root=root, trust_code=trust_code)
        precisions = list(precision or default_precisions(target, student))
        out_dir = out or (student.run_dir / "export" if student.run_dir else
                          student.checkpoint.with_name(student.checkpoint.stem + "-export"))
        options = ExportOptions(threads=threads, max_abs_diff=tolerance, min_agreement=min_agreement,
                                samples=samples, command=" ".join(command))
        exporter = Exporter(student, out_dir, options)
        cards = [exporter.export(target, p) for p in precisions]
    except _user_errors() as exc:
        _fail(str(exc))
    table = Table(title=f"distill export {checkpoint} --target {target} (threads={threads})", title_justify="left")
    for column in ("variant", "size", "max |diff|", "agreement", "accuracy", "b1 ms", "b64 ms/sample", "status"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for card in cards:
        parity, timing = card["parity"], card["latency"]
        table.add_row(f"{card['target']}-{card['precision']}", f"{card['artifact']['bytes']:,}",
                      f"{parity['max_abs_diff']:.2g}", f"{parity['agreement']:.2%}",
                      "-" if card["accuracy"]["accuracy"] is None else f"{card['accuracy']['accuracy']:.2%}",
                      f"{timing['b1_ms']:.3f}",
                      f"{timing['b64_per_sample_ms']:.4f}",
                      "[green]verified[/]" if card["status"] == "verified" else "[red]REFUSED[/]")
    console.print(table)
    console.print(f"Variants and model cards: {out_dir}", highlight=False)
    refused = [card for card in cards if card["status"] != "verified"]
    for card in refused:
        err_console.print(f"[bold red]refused:[/] {card['target']}-{card['precision']}: "
                          f"{'; '.join(card['parity']['failures'])} (report kept in {out_dir}/"
                          f"{card['target']}-{card['precision']}/card.md; accept it with --tolerance / --min-agreement)",
                          highlight=False, soft_wrap=True)
    if refused:
        raise typer.Exit(1)


@app.command()
def bench(
    export_dir: Path = typer.Argument(..., help="an export folder from `distill export`"),
    teacher: Optional[Path] = typer.Option(None, help="teacher model file (default: the student's recipe's teacher)"),
    threads: int = typer.Option(1, min=1, help="torch and onnxruntime threads (recorded)"),
    repeats: int = typer.Option(50, min=3, help="timed runs at batch 1 (a third at batch 64), after warm-up"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the rows here"),
    trust_code: bool = typer.Option(False, "--trust-code", help=TRUST_CODE_HELP),
) -> None:
    """Time teacher, student and every exported variant side by side (median, batch 1 and 64)."""
    from distill.export.bench import bench as run_bench

    try:
        result = run_bench(export_dir, teacher=teacher, threads=threads, repeats=repeats, trust_code=trust_code)
    except _user_errors() as exc:
        _fail(str(exc))
    table = Table(title=f"distill bench {export_dir}: {result['dataset']} test ({result['samples']:,}), "
                        f"threads={threads}, median of {repeats} runs", title_justify="left")
    for column in ("model", "runtime", "precision", "size", "accuracy", "b1 ms", "b64 ms/sample",
                   f"speedup b1 vs {result['baseline'].split(' ')[0]}", "speedup b64", "status"):
        table.add_column(column, justify="left" if column in ("model", "runtime") else "right")
    for row in result["rows"]:
        table.add_row(row["name"], row["runtime"], row["precision"], f"{row['bytes']:,}",
                      "-" if row["accuracy"] is None else f"{row['accuracy']:.2%}",
                      f"{row['b1_ms']:.3f}", f"{row['b64_per_sample_ms']:.4f}", f"{row['speedup_b1']:.1f}x",
                      f"{row['speedup_b64']:.1f}x", row["status"])
    console.print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=2))


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
