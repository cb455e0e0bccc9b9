"""Published few-shot CLIP baselines for bench_fewshot.py, on cached image features (L2-normalised, (n, d)).

LP++ (Huang, Shakeri et al., CVPR 2024): logits_k = f . (v_k + alpha_k t_k), visual prototypes v_k (initialised
  at the class means) and per-class text blends alpha_k, trained by full-batch gradient descent with step sizes
  1 / L from the loss's Lipschitz constants, so there is no learning-rate search.
Tip-Adapter-F (Zhang et al., ECCV 2022): logits = s f W_text^T + alpha exp(-beta (1 - f K^T)) L, the cache keys K
  (initialised at the support features) fine-tuned with AdamW, values L the one-hot labels. The paper searches
  alpha and beta on a validation set; a few-shot user has none, so here they are chosen by leave-one-out
  accuracy of the training-free cache on the support images.

Written here rather than imported: neither paper's code is a package, and both fit in a few lines on features.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def lp_plus_plus(features: np.ndarray, labels: np.ndarray, text: np.ndarray, *, epochs: int = 300) -> callable:
    """Fit LP++ on the support features as the authors' code does (FereshteShakeri/FewShot-CLIP-Strong-Baseline,
    methods/linear_probe_p2.py); returns `predict(features) -> logits`.

    logits = x W^T + b + alpha * (x T^T): W starts at the class means, alpha at 250 x the mean class-centroid text
    logit; W and b by full-batch SGD (momentum 0.9) at lr 4N / lambda_max(X^T X), alpha every 10 epochs at
    lr N / (4 max_k sum_i (x_i . t_k)^2): the inverse Lipschitz constants, no search. Their code also keeps the
    epoch that scores best on a validation set; without one, the last epoch is kept.
    """
    x = torch.from_numpy(features).double()
    y = torch.from_numpy(labels).long()
    t = F.normalize(torch.from_numpy(text).double(), dim=-1)
    n, n_classes = len(x), len(t)
    text_logits = x @ t.T
    centroids = torch.stack([x[y == k].mean(0) for k in range(n_classes)])
    weight = centroids.clone().requires_grad_(True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    text_centroids = torch.stack([text_logits[y == k].mean(0) for k in range(n_classes)])
    alpha = torch.full((n_classes,), 250.0 * float(text_centroids.mean()), dtype=torch.float64, requires_grad=True)
    lr_w = 4 * n / float(torch.linalg.eigvalsh(x.T @ x).max())
    lr_alpha = n / (4 * float((text_logits ** 2).sum(0).max()))
    optimizer = torch.optim.SGD([weight, bias], lr=lr_w, momentum=0.9)

    def logits_of(inputs: torch.Tensor) -> torch.Tensor:
        return inputs @ weight.T + bias + alpha * (inputs @ t.T)

    for epoch in range(epochs):
        loss = F.cross_entropy(logits_of(x), y)
        optimizer.zero_grad()
        loss.backward()  # alpha's gradient accumulates over 10 epochs: a block-coordinate step, as in their code
        optimizer.step()
        if (epoch + 1) % 10 == 0:
            with torch.no_grad():
                alpha -= lr_alpha * alpha.grad
            alpha.grad = None

    def predict(eval_features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return logits_of(torch.from_numpy(eval_features).double()).float().numpy()

    return predict


ALPHAS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
BETAS = (1.0, 3.0, 5.5, 8.0, 12.0)


def leave_one_out_blend(features: np.ndarray, labels: np.ndarray, text: np.ndarray, logit_scale: float,
                        ) -> tuple[float, float]:
    """(alpha, beta) of the training-free cache that classifies each support image best from the others."""
    values = np.eye(len(text), dtype=np.float32)[labels]
    distance = 1.0 - features @ features.T
    zero_shot = logit_scale * features @ text.T
    best, best_acc = (1.0, 5.5), -1.0
    for beta in BETAS:
        affinity = np.exp(-beta * distance)
        np.fill_diagonal(affinity, 0.0)  # an image may not vote for itself
        votes = affinity @ values
        for alpha in ALPHAS:
            acc = float(((zero_shot + alpha * votes).argmax(1) == labels).mean())
            if acc > best_acc:
                best, best_acc = (alpha, beta), acc
    return best


def tip_adapter_f(features: np.ndarray, labels: np.ndarray, text: np.ndarray, *, logit_scale: float,
                  epochs: int = 20, lr: float = 1e-3, seed: int = 0) -> callable:
    """Fit Tip-Adapter-F on the support features (the paper's 20 epochs, lr 0.001, AdamW, cosine schedule), alpha
    and beta by `leave_one_out_blend`. Returns `predict(features) -> logits`."""
    alpha, beta = leave_one_out_blend(features, labels, text, logit_scale)
    torch.manual_seed(seed)
    x = torch.from_numpy(features).float()
    y = torch.from_numpy(labels).long()
    text_t = torch.from_numpy(text).float()
    values = F.one_hot(y, len(text)).float()
    keys = torch.nn.Parameter(x.clone())
    optimizer = torch.optim.AdamW([keys], lr=lr, eps=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)

    def logits_of(inputs: torch.Tensor) -> torch.Tensor:
        affinity = inputs @ F.normalize(keys, dim=-1).T
        return logit_scale * inputs @ text_t.T + alpha * torch.exp(-beta * (1.0 - affinity)) @ values

    for _ in range(epochs):  # the support set is one batch (the paper's batch is 256)
        loss = F.cross_entropy(logits_of(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()

    def predict(eval_features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return logits_of(torch.from_numpy(eval_features).float()).numpy()

    return predict
