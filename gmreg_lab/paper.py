"""The paper's published numbers (Tables 3-7), keyed by run name and attack label, for side-by-side tables.

Attack labels are those of :class:`gmreg_lab.evaluate.Attack` (``"pgd-40"``, ...), so a table pairs each of our
columns with the paper's value of the *same* attack, whatever order the columns come in.
"""

from __future__ import annotations

_T3_COLS = ("clean", "fgsm", "ifgsm-40", "pgd-40", "pgd-100")     # Table 3 (MNIST, eps 0.3, PGD step 0.01)
_T4_COLS = ("clean", "fgsm", "ifgsm-7", "pgd-7", "pgd-20")        # Table 4 (CIFAR-10, eps 8/255, PGD step 2/255)

_TABLE3 = {
    "normal": (99.24, 11.65, 0.31, 0.01, 0.00), "fgsm": (99.34, 89.04, 1.19, 0.17, 0.01),
    "rfgsm": (93.92, 57.06, 41.85, 29.31, 28.76), "eat_a": (99.35, 83.48, 18.75, 10.13, 3.41),
    "eat_b": (99.31, 80.16, 48.13, 37.85, 22.86), "eat_c": (99.20, 82.48, 4.00, 1.29, 0.08),
    "eat_d": (97.66, 56.85, 0.87, 0.29, 0.08), "fgsm_rfgsm": (95.39, 61.60, 44.62, 34.15, 33.41),
    "proposed_lam0": (97.62, 92.52, 4.92, 1.89, 0.17), "pgd": (98.41, 95.56, 92.64, 92.08, 91.13),
    "proposed": (98.74, 95.1, 89.91, 89.48, 87.74),
}
_TABLE4 = {
    "normal": (91.52, 14.00, 0.00, 0.00, 0.00), "fgsm": (92.42, 98.58, 0.09, 0.05, 0.00),
    "rfgsm": (79.39, 98.64, 0.35, 0.22, 0.02), "eat_a": (90.80, 82.14, 10.56, 4.69, 0.67),
    "eat_b": (90.43, 60.59, 32.76, 28.9, 18.31), "eat_c": (90.28, 66.49, 36.49, 29.41, 20.24),
    "fgsm_rfgsm": (80.88, 97.92, 2.18, 1.16, 0.22), "proposed_lam0": (77.00, 98.96, 0.21, 0.06, 0.01),
    "pgd": (79.44, 53.25, 50.53, 50.08, 47.51), "proposed": (80.45, 53.14, 49.83, 49.13, 46.07),
}
# White-box accuracy (%): dataset -> run name -> attack label -> value
WHITE_BOX = {"mnist": {run: dict(zip(_T3_COLS, v)) for run, v in _TABLE3.items()},
             "cifar10": {run: dict(zip(_T4_COLS, v)) for run, v in _TABLE4.items()}}
# Black-box FGSM accuracy (%), Tables 5 / 6: (source run, target run) -> value
BLACK_BOX = {"mnist": {("static_a", "pgd"): 93.70, ("static_a", "proposed"): 93.53,
                       ("static_b", "pgd"): 93.57, ("static_b", "proposed"): 93.25},
             "cifar10": {("static_vgg11", "pgd"): 76.09, ("static_vgg11", "proposed"): 76.81,
                         ("static_vgg19", "pgd"): 77.24, ("static_vgg19", "proposed"): 77.92}}
# Table 7: seconds per epoch on a Titan Xp (MNIST)
SECONDS_PER_EPOCH = {"mnist": {"normal": 2.7, "fgsm": 4.1, "eat_a": 5.5, "pgd": 53.0, "proposed": 8.8}}

# the paper's row order of Tables 3 / 4
ROW_ORDER = ("normal", "fgsm", "rfgsm", "eat_a", "eat_b", "eat_c", "eat_d", "fgsm_rfgsm", "proposed_lam0", "pgd",
             "proposed")

LABELS = {"normal": "Normal", "fgsm": "FGSM Adv.", "rfgsm": "R-FGSM Adv.", "eat_a": "EAT A", "eat_b": "EAT B",
          "eat_c": "EAT C", "eat_d": "EAT D", "fgsm_rfgsm": "R-FGSM + FGSM Adv.",
          "proposed_lam0": "Ablation: proposed, lambda=0", "pgd": "PGD Adv.", "proposed": "Proposed",
          "static_a": "Model A (normal)", "static_b": "Model B (normal)", "static_c": "Model C (normal)",
          "static_d": "Model D (normal)"}


def white_box(dataset: str, run: str, attack_label: str):
    """The paper's accuracy of ``run`` under the attack labelled ``attack_label``, or None if it has none."""
    return WHITE_BOX.get(dataset, {}).get(run, {}).get(attack_label)


# Published numbers of the later single-step methods, placed beside the peers suite (robust accuracy %, AutoAttack
# standard unless said otherwise), each with the exact place it is printed. "reported": the authors' own number, as
# the source lists it. The proposed method's CIFAR-10 "43.72" that stood here (attributed to a re-run by Sriramanan et
# al. 2020 on "the AutoAttack leaderboard") is dropped: it is in neither the fra31/auto-attack README nor a
# RobustBench model card, and no checkable table was found.
_AA_README = "fra31/auto-attack README (commit a39220048b3c, 2023-01-09)"
PEER_ANCHORS = [
    {"method": "fgsm_rs", "dataset": "mnist", "eps": 0.3, "model": "Wong et al.'s small MNIST CNN",
     "clean": 98.50, "reported": 88.77, "autoattack": 82.93,
     "source": f"{_AA_README}, table 'MNIST - Linf', row 9 '(Wong et al., 2020)': clean 98.50, report. 88.77, "
               "AA 82.93 (an earlier version of that table listed AA 82.88)"},
    {"method": "fgsm_rs", "dataset": "cifar10", "eps": 8 / 255, "model": "ResNet-18 ('RN-18'; PreAct in their code)",
     "clean": 83.34, "reported": 46.06, "autoattack": 43.21,
     "source": f"{_AA_README}, table 'CIFAR-10 - Linf', row 31 '(Wong et al., 2020)' (an earlier version listed "
               "43.38); RobustBench model card model_info/cifar10/Linf/Wong2020Fast.json: autoattack_acc 43.21"},
    {"method": "gradalign", "dataset": "cifar10", "eps": 8 / 255, "model": "ResNet-18 (RobustBench's label)",
     "clean": 79.84, "reported": 44.54, "autoattack": 43.93,
     "source": "RobustBench model card model_info/cifar10/Linf/Andriushchenko2020Understanding.json "
               "(github.com/RobustBench/robustbench): clean_acc 79.84, reported 44.54, autoattack_acc 43.93; "
               "not in the fra31/auto-attack README's tables"},
]

# Wong, Rice & Kolter 2020 ("Fast is better than free", ICLR 2020; arXiv 2001.03994), the MNIST FGSM-RS recipe,
# as the defaults of MNIST/train_mnist.py and MNIST/evaluate_mnist.py in locuslab/fast_adversarial (read in two
# public forks that keep those files: Buhua-Liu/fast_adversarial, Faibk/fast_adversarial; this index holds no
# copy of the MNIST folder of the original repository). Network: MNIST/mnist_net.py (models.wong_cnn).
WONG_MNIST_RECIPE = {
    "model": "wong_cnn", "eps": 0.3, "alpha": 0.375, "epochs": 10, "batch_size": 100, "optimizer": "adam",
    "lr_max": 5e-3, "weight_decay": 0.0,
    "lr_schedule": "cyclic: linear 0 -> lr_max at epoch epochs * 2 // 5 (= 4) -> 0 at epoch 10, set before every "
                   "batch at epoch + (i + 1) / batches",
    "attack": "delta ~ U(-eps, eps); gradient at x + delta (not clipped); delta <- clip(delta + alpha sign(g), "
              "-eps, eps), then into [-x, 1 - x]; loss on clip(x + delta, 0, 1)",
    "training_images": 60_000, "evaluation": "PGD, 50 iterations, 10 restarts, step 0.01, eps 0.3, full test set",
    "source": "locuslab/fast_adversarial MNIST/train_mnist.py and evaluate_mnist.py defaults (via the forks "
              "Buhua-Liu/fast_adversarial and Faibk/fast_adversarial; checked on 2026-12-03 against "
              "locuslab/fast_adversarial itself at commit 54f7287, MNIST/train_mnist.py and mnist_net.py)",
}
# Their published MNIST numbers to sit beside a reproduction: clean and the authors' own robust number, and AutoAttack
# on their released model, all from the same row of the AutoAttack table (PEER_ANCHORS[0]).
WONG_MNIST_REPORTED = {"clean": 98.50, "reported (PGD-50 x 10)": 88.77, "autoattack": 82.93,
                       "source": PEER_ANCHORS[0]["source"]}
