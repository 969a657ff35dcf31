"""Run by test_infer_eval under torchrun (gloo) and as one process: prints rank 0's metrics as JSON."""

import json
import sys

from infer_helpers import tiny_generative_retriever

from grace.distributed import close_distributed, exit_process, init_distributed
from grace.infer.evaluate import evaluate

if __name__ == "__main__":
    rank, world = init_distributed()
    retriever = tiny_generative_retriever()
    queries = [f"query number {i} about a {['red', 'blue', 'odd'][i % 3]} thing" for i in range(23)]
    gold = [{f"img{(i * 7 + j) % 40}" for j in range(6)} for i in range(23)]
    res = evaluate(retriever, queries, gold, (1, 5, 10), batch_size=4, progress=False)
    if rank == 0:
        res.pop("latency_ms")
        print("RESULT " + json.dumps(res, sort_keys=True))
        sys.stdout.flush()
    close_distributed()
    exit_process(0)
