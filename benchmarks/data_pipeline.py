"""Images a second the ImageNet loader delivers, by decoder and number of DataLoader workers.

Writes an ImageFolder of ImageNet-sized JPEGs (``--images`` of ``--width`` × ``--height``, a few
classes; smooth random colour fields plus noise, quality 90, so the files are about ImageNet's
size) into a temporary folder, loads it with ``circuits.data.load("imagenet:...")`` (the loader a
run uses: RandomResizedCrop(224) + flip + normalise, batch ``--batch-size``, shuffled as in
training) and times one pass over the training split, per decoder:

- ``pil``: ImageFolder's PIL loader, transforms on PIL images (the loader's default);
- ``torchvision``: ``torchvision.io.decode_image`` to a uint8 tensor, transforms on tensors;

and per number of workers (``--workers``, default 0, 1, 2). Rates count the images after the
first batch (worker start-up excluded), median of ``--repeats`` passes. Also recorded: how far
the two decoders' evaluation tensors are apart on the same files (mean and max |difference|,
normalised units), and the training step rate that the loader has to keep up with: plain BP on
torchvision's ResNet-18 on one GPU (``--device cuda``: measured, batch 256, bfloat16 autocast,
channels_last; otherwise unknown).

    python benchmarks/data_pipeline.py                        # benchmarks/results/data_pipeline.{json,md}
    python benchmarks/data_pipeline.py --images 20 --workers 0 --repeats 1 --out /tmp/dp
    python benchmarks/data_pipeline.py --device cuda --tag gpu
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_time import git_commit, save_result  # noqa: E402

from circuits import data as datasets  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def write_jpegs(root: str, images: int, classes: int, width: int, height: int, seed: int = 0) -> str:
    """root/imagenet/{train,val}/cNNN/*.jpg: ``images`` training JPEGs over ``classes`` folders and
    one validation image per class. Returns root."""
    from torchvision.io import encode_jpeg

    g = torch.Generator().manual_seed(seed)
    for split, n in (("train", images), ("val", classes)):
        for i in range(n):
            folder = os.path.join(root, "imagenet", split, f"c{i % classes:03d}")
            os.makedirs(folder, exist_ok=True)
            smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 8, generator=g), size=(height, width),
                                                     mode="bilinear", align_corners=False)[0]
            pixels = (0.8 * smooth + 0.2 * torch.rand(3, height, width, generator=g)).mul(255).to(torch.uint8)
            with open(os.path.join(folder, f"{i:05d}.jpg"), "wb") as f:
                f.write(encode_jpeg(pixels, quality=90).numpy().tobytes())
    return root


def rate(root: str, decoder: str, workers: int, batch: int, size: int) -> tuple[float, int]:
    """(images a second, images timed) over one shuffled pass of the training split, after its first batch."""
    split = datasets.load(f"imagenet:workers={workers},decoder={decoder},image_size={size}", root)["train"]
    it = split.batches(batch, seed=0, epoch=0)
    next(it)
    t0, n = time.perf_counter(), 0
    for x, _ in it:
        n += len(x)
    seconds = time.perf_counter() - t0
    return (n / seconds if n else float("nan")), n


def decoder_difference(root: str, size: int) -> dict:
    """Mean and max |PIL − torchvision| of the evaluation tensors of the validation images."""
    a = torch.cat([x for x, _ in datasets.load(f"imagenet:workers=0,decoder=pil,image_size={size}", root)["test"].batches(64)])
    b = torch.cat([x for x, _ in datasets.load(f"imagenet:workers=0,decoder=torchvision,image_size={size}", root)["test"].batches(64)])
    d = (a - b).abs()
    return {"mean_abs": d.mean().item(), "max_abs": d.max().item(), "images": len(a)}


def gpu_step_rate(device: str, batch: int = 256, steps: int = 20) -> float | None:
    """Images a second of plain-BP training steps of torchvision's ResNet-18 on ``device`` (None on a CPU)."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    import torchvision

    model = torchvision.models.resnet18().to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, 224, 224, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize(device)
    return batch * steps / (time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--width", type=int, default=500)
    ap.add_argument("--height", type=int, default=375)
    ap.add_argument("--image-size", type=int, default=224, help="RandomResizedCrop's output side")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", default="0,1,2", help="comma-separated numbers of DataLoader workers")
    ap.add_argument("--decoders", default=",".join(datasets.DECODERS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="cuda: also time ResNet-18's training step there")
    ap.add_argument("--tag", default="cpu")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    decoders = [d.strip() for d in args.decoders.split(",")]
    bad = [d for d in decoders if d not in datasets.DECODERS]
    if bad:
        ap.error(f"unknown decoder(s) {', '.join(bad)} (known: {', '.join(datasets.DECODERS)})")
    rows = []
    with tempfile.TemporaryDirectory(prefix="data_pipeline-") as root:
        write_jpegs(root, args.images, args.classes, args.width, args.height)
        jpeg_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(os.path.join(root, "imagenet", "train"))
                         for f in files)
        for w in workers:
            for decoder in decoders:  # interleaved, repeated: a slow spell hits both decoders alike
                passes = [rate(root, decoder, w, args.batch_size, args.image_size) for _ in range(args.repeats)]
                rates = [r for r, _ in passes]
                rows.append({"decoder": decoder, "workers": w, "images_per_s": statistics.median(rates),
                             "runs": [round(r, 2) for r in rates], "images_timed": passes[0][1]})
                print(f"{decoder:12s} workers={w}: {rows[-1]['images_per_s']:.1f} images/s", flush=True)
        difference = decoder_difference(root, args.image_size) if len(decoders) == 2 else None
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    gpu = gpu_step_rate(args.device)
    record = {
        "setup": f"{args.images} JPEGs {args.width}×{args.height} (mean {jpeg_bytes / args.images / 1e3:.0f} kB), "
                 f"{args.classes} classes, RandomResizedCrop({args.image_size}) + flip + normalise, batch {args.batch_size}",
        "cpus": os.cpu_count(), "load_average": load, "torch": torch.__version__, "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"), "commit": git_commit(), "rows": rows, "decoder_difference": difference,
        "resnet18_step_images_per_s": gpu,
        "resnet18_step_note": ("plain BP, torchvision ResNet-18, batch 256, bfloat16, channels_last, on "
                               + torch.cuda.get_device_name(args.device)) if gpu else
                              "unknown: no GPU measured (run with --device cuda on a GPU machine)"}
    save_result(args.out, "data_pipeline", args.tag, record, write_markdown)
    print(open(os.path.join(args.out, "data_pipeline.md")).read())


def write_markdown(data: dict, path: str) -> None:
    lines = ["# ImageNet loader throughput", "",
             "Written by `benchmarks/data_pipeline.py`: images a second one process's DataLoader delivers",
             "(`circuits.data` ImageNet path) by JPEG decoder and number of workers, after the first batch;",
             "median of the repeated passes (each pass's rate beside it).", ""]
    for tag, run in data.items():
        load = run.get("load_average")
        lines += [f"## {tag}", "", f"{run['setup']}; {run['cpus']} CPUs, load average "
                  f"{', '.join(f'{v:.2f}' for v in load) if load else 'unknown'} (1, 5, 15 min) when it ended; "
                  f"torch {run['torch']}, {run['date']}, commit {run['commit']}", "",
                  "| decoder | workers | images/s | passes |", "|---|---|---|---|"]
        for r in run["rows"]:
            lines.append(f"| {r['decoder']} | {r['workers']} | {r['images_per_s']:.1f} | "
                         f"{', '.join(f'{v:.1f}' for v in r['runs'])} |")
        d = run.get("decoder_difference")
        if d:
            lines += ["", f"PIL against torchvision.io on the same {d['images']} evaluation images (Resize + "
                      f"CenterCrop, normalised units): mean |difference| {d['mean_abs']:.4f}, max {d['max_abs']:.3f}."]
        gpu = run.get("resnet18_step_images_per_s")
        lines += ["", "The rate to keep up with, ResNet-18's training step on one GPU: " +
                  (f"{gpu:.0f} images/s ({run['resnet18_step_note']})." if gpu else f"{run['resnet18_step_note']}."), ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
