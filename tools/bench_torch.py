"""Reference row for tools/bench_steps.py: a hand-written PyTorch eager training loop doing lt_keras's LeNet work.

    python tools/bench_torch.py --steps=400 --rounds=1     # with a Python that has torch; prints JSON

LeNet-300-100 (784-300-100-10) with fixed 50% random masks multiplied into
the weights in the forward pass, Adam 1e-3, batch 60, cross-entropy, on the
same kind of in-memory synthetic data as bench_steps.py (step cost does not
depend on pixel values). torch is never a dependency of lt_keras: run this
with a separate virtualenv's Python (``pip install torch`` there), which
``bench_steps.py --torch_python=...`` does for you, one round per process,
interleaved with its own rounds. Written by hand because the point is the
plain eager loop a PyTorch user would write.
"""
import argparse
import json
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    sizes = [784, 300, 100, 10]
    weights = [torch.nn.init.xavier_normal_(torch.empty(o, i)).requires_grad_() for i, o in zip(sizes, sizes[1:])]
    biases = [torch.zeros(o, requires_grad=True) for o in sizes[1:]]
    masks = [(torch.rand_like(w) < 0.5).float() for w in weights]
    optimizer = torch.optim.Adam(weights + biases, lr=1e-3)
    x = torch.rand(3000, 784)
    y = torch.randint(0, 10, (3000,))

    def step(i):
        start = (i * 60) % (3000 - 60)
        h = x[start:start + 60]
        for layer, (w, b, m) in enumerate(zip(weights, biases, masks)):
            h = F.linear(h, w * m, b)
            if layer < len(weights) - 1:
                h = F.relu(h)
        loss = F.cross_entropy(h, y[start:start + 60])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for i in range(args.warmup):
        step(i)
    ms = []
    for _ in range(args.rounds):
        begin = time.perf_counter()
        for i in range(args.steps):
            step(i)
        ms.append(1000 * (time.perf_counter() - begin) / args.steps)
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "ms_per_step": ms}))


if __name__ == "__main__":
    main()
