"""Scale-out (issue 23): each process reads only its share of every global batch and of the
evaluation sets, an N-process run trains like one process, and the NaN guard reads the device
every k steps only, never saving a diverged state."""
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from circuits import Circuit, Training
from circuits import train as train_module
from circuits.data import CropFlip, GlobalBatchShards, LoaderSplit, Split, batches, shard_range
from circuits.train import TrainingDiverged, load_checkpoint, train
from connectomes import Dense
from plasticity import make_rule
from populations import Input, Layer, Readout

N, TEST, BATCH, SEED = 48, 20, 8, 3  # 6 steps per epoch


class Recording:
    """Stands for a Split's image tensor and records every row read, as (how, rows)."""

    def __init__(self, x, log):
        self.x, self.log, self.device = x, log, x.device

    def __len__(self):
        return len(self.x)

    def to(self, device):
        return self

    def __getitem__(self, index):
        rows = list(range(*index.indices(len(self.x)))) if isinstance(index, slice) else index.tolist()
        self.log.append(("slice" if isinstance(index, slice) else "index", rows))
        return self.x[index]


class RecordingDataset(torch.utils.data.Dataset):
    """A map-style data set (as ImageFolder is) that records every index it is asked for."""

    classes = [0, 1, 2]

    def __init__(self, x, y, log):
        self.x, self.y, self.log = x, y, log

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        self.log.append(i)
        return self.x[i], self.y[i]


def data(n, offset=0):
    g = torch.Generator().manual_seed(11 + offset)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def recording_splits(kind):
    """({"train", "test"} splits that record what is read, {split: its log})."""
    logs = {"train": [], "test": []}
    (xt, yt), (xs, ys) = data(N), data(TEST, 1)
    if kind == "memory":
        splits = {"train": Split(Recording(xt, logs["train"]), yt), "test": Split(Recording(xs, logs["test"]), ys)}
    else:
        splits = {"train": LoaderSplit(RecordingDataset(xt, yt, logs["train"])),
                  "test": LoaderSplit(RecordingDataset(xs, ys, logs["test"]))}
    return splits, logs


def tiny():
    c = Circuit("scale", seed=0)
    x = c.add(Input("x", 4))
    h = c.add(Layer("h", 5, activation="tanh"))
    y = c.add(Readout("y", 3))
    c.connect(x, h, Dense())
    c.connect(h, y, Dense())
    c.feedback(make_rule("fa"))
    return c


TRAINING = Training(data="recorded", epochs=1, batch_size=BATCH, lr=0.1, momentum=0.9, eval_batch_size=8)


def global_order(kind):
    """The order of epoch 0 as one process trains in it today: ``randperm`` seeded by seed·100003
    (in memory); a DataLoader over a RandomSampler drawing from the same generator (its workers'
    base seed drawn first)."""
    g = torch.Generator().manual_seed(SEED * 100_003)
    if kind == "loader":
        torch.empty((), dtype=torch.int64).random_(generator=g)
    return torch.randperm(N, generator=g).tolist()


def rank_share(order, rank, world):
    out = []
    for start in range(0, len(order), BATCH):
        batch = order[start:start + BATCH]
        part = shard_range(len(batch), rank, world)
        out += batch[part.start:part.stop]
    return out


def _worker(rank, world, port, folder):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    reads = {}
    try:
        for kind in ("memory", "loader"):
            splits, logs = recording_splits(kind)
            train(tiny(), TRAINING, rule="fa", run_dir=os.path.join(folder, kind), data_root="unused",
                  seed=SEED, progress=False, splits=splits)
            reads[kind] = logs
    finally:
        from circuits import distributed
        distributed.teardown()
    with open(os.path.join(folder, f"reads-{rank}.json"), "w") as f:
        json.dump(reads, f)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_read_only_their_half_and_train_like_one(tmp_path):
    """2 processes (gloo): each reads exactly its half of every global batch and its half of the
    test set, in memory and through a DataLoader alike; the weights after 6 steps and the test
    metrics equal one process's."""
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path / "two")), nprocs=2, join=True)
    reads = [json.loads((tmp_path / "two" / f"reads-{r}.json").read_text()) for r in (0, 1)]
    for kind in ("memory", "loader"):
        order = global_order(kind)
        halves = [rank_share(order, r, 2) for r in (0, 1)]
        assert sorted(halves[0] + halves[1]) == list(range(N)) and len(halves[0]) == N // 2
        for r in (0, 1):
            train_log, test_log = reads[r][kind]["train"], reads[r][kind]["test"]
            if kind == "memory":
                shuffled = sum((rows for how, rows in train_log if how == "index"), [])
                probe = [rows for how, rows in train_log if how == "slice"]
                # the main process alone reads the probe batch of the alignment metrics (the first cells)
                assert probe == ([list(range(BATCH))] if r == 0 else [])
                test_rows = sum((rows for _, rows in test_log), [])
            else:  # the probe: a DataLoader's first, unshuffled batch
                probe = BATCH if r == 0 else 0
                assert train_log[:probe] == list(range(probe))
                shuffled, test_rows = train_log[probe:], test_log
            assert shuffled == halves[r], (kind, r)  # its half, in the global order, and nothing else
            # evaluated twice (epoch 0, epoch 1): its block of the test set each time
            assert test_rows == 2 * list(shard_range(TEST, r, 2)), (kind, r)
    for kind in ("memory", "loader"):
        splits, logs = recording_splits(kind)
        train(tiny(), TRAINING, rule="fa", run_dir=str(tmp_path / "one" / kind), data_root="unused", seed=SEED,
              progress=False, splits=splits)
        a = load_checkpoint(str(tmp_path / "one" / kind / "checkpoint.pt"))["model"]
        b = load_checkpoint(str(tmp_path / "two" / kind / "checkpoint.pt"))["model"]
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=f"{kind} {k}")
        one, two = (json.loads((tmp_path / w / kind / "metrics.jsonl").read_text()) for w in ("one", "two"))
        assert two["test_acc"] == one["test_acc"]
        for key in ("test_loss", "train_loss", "train_acc"):
            assert two[key] == pytest.approx(one[key], rel=1e-6), (kind, key)


def test_shards_of_a_global_batch_are_the_one_process_batch_augmentation_included():
    """In memory, with CIFAR's crop-and-flip: the ranks' shards, stacked, are the one-process
    batch bit for bit (each row gets the draws it gets in the global batch), for 1, 2 and 3 ranks."""
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randn(26, 3, 8, 8, generator=g), torch.arange(26), CropFlip(2, [0.0, 0.0, 0.0]))
    whole = list(batches(split, 10, seed=4, epoch=2))
    for world in (2, 3):
        shards = [list(batches(split, 10, seed=4, epoch=2, shard=(r, world))) for r in range(world)]
        assert [len(s) for s in shards] == [3] * world
        for b, (x, y) in enumerate(whole):
            assert torch.equal(torch.cat([s[b][0] for s in shards]), x)
            assert torch.equal(torch.cat([s[b][1] for s in shards]), y)
    evaluation = [list(batches(split, 4, shard=(r, 3))) for r in range(3)]
    assert [torch.cat([y for _, y in e]).tolist() for e in evaluation] == [list(range(0, 9)), list(range(9, 18)),
                                                                          list(range(18, 26))]


def test_loader_order_and_worker_seeds_are_todays_with_one_process():
    """A LoaderSplit's epoch order, one process, is the plain DataLoader(RandomSampler) order it
    had before sharding (the same generator draws: workers' base seed, then the permutation)."""
    log = []
    x, y = data(N)
    split = LoaderSplit(RecordingDataset(x, y, log))
    got = torch.cat([b for _, b in split.batches(BATCH, seed=SEED, epoch=0)])
    gen = torch.Generator().manual_seed(SEED * 100_003)
    old = torch.utils.data.DataLoader(split.dataset, batch_size=BATCH, generator=gen,
                                      sampler=torch.utils.data.RandomSampler(split.dataset, generator=gen))
    assert torch.equal(got, torch.cat([b for _, b in old]))
    assert log[:N] == global_order("loader")
    assert len(GlobalBatchShards(range(N + 1), BATCH, 1, 2)) == 7


def plant_nan(step):
    """Training data whose image at 0-based step ``step`` (epoch 0, seed SEED) is NaN."""
    x, y = data(N)
    order = global_order("memory")
    x[order[step * BATCH]] = float("nan")
    return {"train": Split(x, y), "test": Split(*data(TEST, 1))}


def test_deferred_nan_check_names_the_window_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    """nan_check_every=4, checkpoints every 3 steps, a NaN image in step 5 (1-based): steps 1-4
    pass their checks (checkpoint at step 3 written); the checkpoint due at step 6 checks first,
    finds steps 5-6 non-finite and saves nothing: on disk stays step 3, the very state a clean
    run saves at step 3."""
    saved = []
    save = train_module.save_checkpoint

    def saving(path, state):
        saved.append((state["epoch"], state["step"], {k: v.clone() for k, v in state["model"].items() if torch.is_tensor(v)}))
        save(path, state)

    monkeypatch.setattr(train_module, "save_checkpoint", saving)
    training = Training(data="planted", epochs=1, batch_size=BATCH, lr=0.1, nan_check_every=4)
    run_dir = tmp_path / "nan"
    with pytest.raises(TrainingDiverged) as err:
        train(tiny(), training, rule="fa", run_dir=str(run_dir), data_root="unused", seed=SEED, progress=False,
              splits=plant_nan(4), checkpoint_every=3)
    message = str(err.value)
    assert "non-finite in one of steps 5-6 of epoch 1 (checked every 4 steps" in message, message
    assert "last good state is in" in message and "epoch 0, step 3" in message, message
    assert [(e, s) for e, s, _ in saved] == [(0, 0), (0, 3)]  # the initial state, then step 3; nothing after
    state = load_checkpoint(str(run_dir / "checkpoint.pt"))
    assert (state["epoch"], state["step"]) == (0, 3)
    saved.clear()
    clean = plant_nan(4)
    clean["train"].x.nan_to_num_(0.0)
    train(tiny(), training, rule="fa", run_dir=str(tmp_path / "clean"), data_root="unused", seed=SEED,
          progress=False, splits=clean, checkpoint_every=3)
    assert [(e, s) for e, s, _ in saved] == [(0, 0), (0, 3), (1, 0)]
    tensors = {k: v for k, v in state["model"].items() if torch.is_tensor(v)}
    assert tensors.keys() == saved[1][2].keys()
    for k, v in tensors.items():
        assert torch.isfinite(v).all() and torch.equal(v, saved[1][2][k]), k


def test_without_checkpoints_the_window_is_the_check_interval(tmp_path):
    """No mid-epoch checkpoint: the NaN of step 2 is found at the check after step 4 (window
    1-4); the initial state stays on disk. With nan_check_every=1 the loop stops before step 2."""
    training = Training(data="planted", epochs=1, batch_size=BATCH, lr=0.1, nan_check_every=4)
    with pytest.raises(TrainingDiverged, match=r"one of steps 1-4 of epoch 1 \(checked every 4 steps"):
        train(tiny(), training, rule="fa", run_dir=str(tmp_path / "a"), data_root="unused", seed=SEED,
              progress=False, splits=plant_nan(1))
    assert (load_checkpoint(str(tmp_path / "a" / "checkpoint.pt"))["step"]) == 0
    every = training.with_values({"nan_check_every": 1})
    with pytest.raises(TrainingDiverged, match=r"diverged at epoch 1, step 1: "):
        train(tiny(), every, rule="fa", run_dir=str(tmp_path / "b"), data_root="unused", seed=SEED,
              progress=False, splits=plant_nan(1))


def test_deferred_check_reads_the_device_only_at_checks(tmp_path, monkeypatch):
    """Between two checks a step reads nothing back from the device (no .item(), bool(), float(),
    .tolist()): with nan_check_every=3 over 6 steps only steps 3 and 6 read, once each; with 1,
    every step reads its loss."""
    monkeypatch.setattr(train_module, "projection_metrics", lambda model, probe: {})
    reads, marks = [0], []
    originals = {name: getattr(torch.Tensor, name) for name in ("item", "__bool__", "__float__", "tolist")}

    def counting(name):
        def method(self, *a, **k):
            reads[0] += 1
            return originals[name](self, *a, **k)
        return method

    compile_step = train_module.make_optimizer

    def making(model, training):
        optimizer = compile_step(model, training)
        optimizer.register_step_post_hook(lambda *a: marks.append(reads[0]))
        return optimizer

    monkeypatch.setattr(train_module, "make_optimizer", making)
    per_step = {}
    for k in (3, 1):
        reads[0], marks[:] = 0, []
        for name in originals:
            monkeypatch.setattr(torch.Tensor, name, counting(name))
        train(tiny(), Training(data="d", epochs=1, batch_size=BATCH, lr=0.1, nan_check_every=k), rule="fa",
              run_dir=str(tmp_path / f"k{k}"), data_root="unused", seed=SEED, progress=False,
              splits={"train": Split(*data(N)), "test": Split(*data(TEST, 1))})
        for name, original in originals.items():
            monkeypatch.setattr(torch.Tensor, name, original)
        per_step[k] = [b - a for a, b in zip(marks, marks[1:])]  # reads between step i's and step i+1's update
    assert per_step[3] == [0, 0, 1, 0, 0], per_step  # the check after step 3 (the one after step 6 ends the epoch)
    assert per_step[1] == [1] * 5, per_step


def test_deferred_check_trains_bit_for_bit_like_the_per_step_check(tmp_path):
    """The loss sum kept on the device (nan_check_every > 1) is the per-step float sum: the same
    metrics and weights as nan_check_every=1, to the bit."""
    out = {}
    for k in (1, 4):
        history = train(tiny(), Training(data="d", epochs=2, batch_size=BATCH, lr=0.1, momentum=0.9, nan_check_every=k),
                        rule="fa", run_dir=str(tmp_path / f"k{k}"), data_root="unused", seed=SEED, progress=False,
                        splits={"train": Split(*data(N)), "test": Split(*data(TEST, 1))})
        out[k] = ([{key: v for key, v in r.items() if key != "seconds"} for r in history],
                  load_checkpoint(str(tmp_path / f"k{k}" / "checkpoint.pt"))["model"])
    assert out[1][0] == out[4][0]
    assert all(torch.equal(out[1][1][key], out[4][1][key]) for key in out[1][1] if torch.is_tensor(out[1][1][key]))
