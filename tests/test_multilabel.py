"""Multi-label MultiMix: multi-hot targets mixed with the features' weights, binary cross-entropy
on the mixed logits, through the losses, the head, MultiMixTrainer and MultiMixTask."""

import sys
from pathlib import Path

import datasets
import pytest
import timm
import torch
import torch.nn.functional as F
from timm.loss import BinaryCrossEntropy
from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hf_families import BY_NAME, C, build, make_inputs, repeat_first  # noqa: E402

from hf_multimix import MultiMixConfig, MultiMixHead  # noqa: E402
from hf_multimix.functional import sample_lambda  # noqa: E402
from hf_multimix.losses import dense_multimix_loss, multimix_loss  # noqa: E402
from hf_multimix.multilabel_metrics import mean_average_precision, multilabel_f1  # noqa: E402
from hf_multimix.timm_task import MultiMixTask  # noqa: E402
from hf_multimix.trainer import MultiMixTrainer  # noqa: E402

Y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])  # rows sum to 2, 0, 3, 1


def _model(name: str) -> torch.nn.Module:
    """A tiny multi-label classifier over C classes in eval mode (dropout off): Hugging Face models
    with `problem_type="multi_label_classification"`; the timm model opts in with `task`."""
    if name == "timm":
        torch.manual_seed(0)
        return timm.create_model("resnet18", pretrained=False, num_classes=C).eval()
    model = build(BY_NAME[name])
    model.config.problem_type = "multi_label_classification"
    return model


def _inputs(name: str, m: int) -> dict:
    if name == "timm":
        return {"x": torch.randn(m, 3, 64, 64, generator=torch.Generator().manual_seed(1))}
    return make_inputs(BY_NAME[name], m)


def _logits(model, inputs):
    out = model(**inputs)
    return out if isinstance(out, torch.Tensor) else out.logits


def _task(name: str) -> dict:
    return {"task": "multi_label"} if name == "timm" else {}


# ---------------------------------------------------------------------------------------------
# The maths


def _manual(z, y, head, lam, teacher=None, beta=0.0, temperature=1.0):
    """Mixed embeddings `Lambda^T Z`, mixed targets `Lambda^T Y`, BCE (mean over mixes and classes)."""
    logits = head(lam.t() @ z)
    y_mix = lam.t() @ y
    loss = F.binary_cross_entropy_with_logits(logits, y_mix)
    if teacher is not None:
        q = lam.t() @ teacher
        entropy = torch.xlogy(q, q) + torch.xlogy(1 - q, 1 - q)
        kl = (entropy + F.binary_cross_entropy_with_logits(logits / temperature, q, reduction="none")).mean()
        loss = (1 - beta) * loss + beta * temperature**2 * kl
    return loss


@pytest.mark.parametrize("affine", [True, False], ids=["shortcut", "embeddings"])
def test_loss_is_bce_of_mixed_logits_against_lambda_t_y(affine):
    torch.manual_seed(0)
    head, z = torch.nn.Linear(8, 3), torch.randn(4, 8)
    lam = sample_lambda(4, 30, 0.5)
    loss = multimix_loss(z, Y, head, lam, task="multi_label", clean_weight=0.0, affine=affine)
    torch.testing.assert_close(loss, _manual(z, Y, head, lam))
    with_clean = multimix_loss(z, Y, head, lam, task="multi_label", clean_weight=0.5, affine=affine)
    torch.testing.assert_close(with_clean, _manual(z, Y, head, lam) + 0.5 * F.binary_cross_entropy_with_logits(head(z), Y))


def test_shortcut_is_exact_for_loss_and_gradients_pooled_and_dense():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 3)
    for dense in (False, True):
        z = torch.randn(4, 5, 8) if dense else torch.randn(4, 8)
        lam = sample_lambda(4, 20, 0.3, positions=5) if dense else sample_lambda(4, 20, 0.3)
        fn = dense_multimix_loss if dense else multimix_loss
        results = []
        for affine in (True, False):
            zz = z.clone().requires_grad_(True)
            head.zero_grad()
            loss = fn(zz, Y, head, lam, task="multi_label", affine=affine, chunk_size=7)
            loss.backward()
            results.append((loss.detach(), zz.grad, head.weight.grad.clone()))
        for a, b in zip(*results):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_dense_loss_is_the_per_position_bce():
    torch.manual_seed(0)
    head, z = torch.nn.Linear(8, 3), torch.randn(4, 5, 8)
    lam = sample_lambda(4, 10, 0.5, positions=5)
    loss = dense_multimix_loss(z, Y, head, lam, task="multi_label", clean_weight=0.0)
    per_position = torch.stack([_manual(z[:, p], Y, head, lam[p]) for p in range(5)])
    torch.testing.assert_close(loss, per_position.mean())


def test_self_distillation_uses_sigmoid_teachers_and_a_bernoulli_kl():
    torch.manual_seed(0)
    head, z = torch.nn.Linear(8, 3), torch.randn(4, 8)
    lam = sample_lambda(4, 30, 0.5)
    teacher = torch.sigmoid(torch.randn(4, 3) / 2.0)
    loss = multimix_loss(z, Y, head, lam, task="multi_label", clean_weight=0.0, distill_weight=0.3,
                         temperature=2.0, teacher_probs=teacher)
    torch.testing.assert_close(loss, _manual(z, Y, head, lam, teacher, beta=0.3, temperature=2.0))
    with pytest.raises(ValueError, match=r"teacher_probs must hold values in \[0, 1\].*sigmoid"):
        multimix_loss(z, Y, head, lam, task="multi_label", distill_weight=0.3, teacher_probs=teacher * 3)


def test_label_smoothing_follows_timms_binary_cross_entropy():
    torch.manual_seed(0)
    head, z = torch.nn.Linear(8, 3), torch.randn(4, 8)
    lam = sample_lambda(4, 10, 0.5)
    smoothed = multimix_loss(z, Y, head, lam, task="multi_label", label_smoothing=0.3)
    plain = multimix_loss(z, Y * 0.7 + 0.1, head, lam, task="multi_label")
    torch.testing.assert_close(smoothed, plain)


@pytest.mark.parametrize(
    "targets, error, match",
    [
        (Y * 2, ValueError, r"multi-label targets must hold values in \[0, 1\], but entry \[0, 0\] is 2"),
        (Y - 0.5, ValueError, r"in \[0, 1\].*is -0.5"),
        (torch.full((4, 3), float("nan")), ValueError, r"in \[0, 1\].*nan"),
        (Y[:, :2], ValueError, r"multi-hot \[m, c\] = \[4, 3\].*got shape \(4, 2\)"),
        (torch.tensor([0, 1, 2, 0]), ValueError, r"multi-hot \[m, c\].*got shape \(4,\)"),
        (Y.long(), TypeError, r"floating point multi-hot.*int64.*\.float\(\)"),
    ],
    ids=["above-1", "negative", "nan", "classes", "class-ids", "int"],
)
def test_bad_targets_fail_with_the_fix(targets, error, match):
    with pytest.raises(error, match=match):
        multimix_loss(torch.randn(4, 8), targets, torch.nn.Linear(8, 3), n=5, task="multi_label")


def test_config_checks_the_task():
    assert MultiMixConfig().task is None and MultiMixConfig(task="multi_label").task == "multi_label"
    with pytest.raises(ValueError, match=r"unknown task 'bce'; choose one of \('single_label', 'multi_label', 'token'\)"):
        MultiMixConfig(task="bce")


# ---------------------------------------------------------------------------------------------
# The head


@pytest.mark.parametrize("name", ["bert", "vit", "timm"])
def test_identical_examples_give_one_plus_clean_weight_times_the_models_bce(name):
    # Pooled: the mixed embeddings are the example's own. (Dense mixes positions, whose logits are
    # not the model's pooled ones; its per-position BCE is checked in the maths tests above.)
    model = _model(name)
    inputs = repeat_first(_inputs(name, 4), 4)
    y = Y[:1].expand(4, -1).contiguous()
    with torch.no_grad():
        ref = F.binary_cross_entropy_with_logits(_logits(model, inputs), y)
    for clean_weight in (0.0, 1.0):
        head = MultiMixHead(model, n=50, clean_weight=clean_weight, **_task(name)).train()
        model.eval()  # dropout and batch norm statistics off; the head still mixes
        loss = head(**inputs, labels=y).loss
        torch.testing.assert_close(loss.detach(), (1 + clean_weight) * ref, atol=1e-5, rtol=1e-5)


def _nonzero_grads(model):
    return {k for k, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


@pytest.mark.parametrize("dense", [False, True], ids=["pooled", "dense"])
@pytest.mark.parametrize("name", ["bert", "vit", "timm"])
def test_gradients_are_finite_and_reach_what_plain_bce_reaches(name, dense):
    model = _model(name).train()
    inputs = _inputs(name, 4)
    F.binary_cross_entropy_with_logits(_logits(model, inputs), Y).backward()
    reached = _nonzero_grads(model)
    model.zero_grad(set_to_none=True)
    head = MultiMixHead(model, n=50, dense=dense, **_task(name)).train()
    head(**inputs, labels=Y).loss.backward()
    assert _nonzero_grads(model) == reached
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", ["bert", "vit"])
def test_eval_passthrough_is_the_model_and_its_own_bce(name):
    model = _model(name)
    head = MultiMixHead(model, n=50).eval()
    inputs = _inputs(name, 4)
    with torch.no_grad():
        own = model(**inputs, labels=Y)  # the model computes BCEWithLogitsLoss itself
        out = head(**inputs, labels=Y)
        plain = head(**inputs)
    assert type(out) is type(own)
    torch.testing.assert_close(out.logits, own.logits, rtol=0, atol=0)
    torch.testing.assert_close(plain.logits, own.logits, rtol=0, atol=0)
    torch.testing.assert_close(out.loss, own.loss)


def test_timm_eval_passthrough_is_the_model():
    model = _model("timm")
    head = MultiMixHead(model, task="multi_label").eval()
    x = _inputs("timm", 2)["x"]
    with torch.no_grad():
        torch.testing.assert_close(head(x), model(x), rtol=0, atol=0)


def test_head_task_follows_the_model_and_refuses_a_contradiction():
    model = _model("bert")
    assert MultiMixHead(model).task == "multi_label"
    with pytest.raises(ValueError, match=r"task='single_label' contradicts the model's config.problem_type="
                                         r"'multi_label_classification'"):
        MultiMixHead(model, task="single_label")
    assert MultiMixHead(_model("timm")).task is None  # single-label: timm models opt in
    head = MultiMixHead(model)
    head.multimix_config = MultiMixConfig(n=7)  # task None: the model's, as at construction
    assert head.task == "multi_label" and head.n == 7
    with pytest.raises(ValueError, match=r"\['task'\] decide what MultiMixHead builds"):
        head.multimix_config = MultiMixConfig(task="single_label")
    single = MultiMixHead(_model("timm"))
    single.multimix_config = MultiMixConfig(task="single_label", n=5)  # the same task as None
    assert single.n == 5 and single.task is None
    with pytest.raises(ValueError, match=r"\['task'\] decide what MultiMixHead builds"):
        single.multimix_config = MultiMixConfig(task="multi_label")


@pytest.mark.parametrize(
    "labels, error, match",
    [
        (Y.long(), TypeError, r"multi-label labels must be floating point.*labels.float\(\)"),
        (torch.tensor([0, 1, 2, 0]), ValueError, r"multi-label labels must be multi-hot \[m, c\] = \[4, 3\]"),
        (Y * 2, ValueError, r"labels must hold values in \[0, 1\]"),
        (torch.zeros(4, 4), ValueError, r"got shape \(4, 4\)"),
    ],
    ids=["int", "class-ids", "above-1", "classes"],
)
def test_head_refuses_bad_labels_with_the_fix(labels, error, match):
    head = MultiMixHead(_model("bert"), n=10)
    inputs = _inputs("bert", 4)
    for mode in (head.train, head.eval):
        mode()
        with pytest.raises(error, match=match):
            head(**inputs, labels=labels)


def test_head_self_distillation_teacher_is_the_sigmoid():
    model = _model("bert")
    head = MultiMixHead(model, n=20, distill_weight=0.5, temperature=2.0).train()
    logits = torch.randn(4, C)
    torch.testing.assert_close(head._teacher_probs({}, logits), torch.sigmoid(logits / 2.0))
    loss = head(**_inputs("bert", 4), labels=Y).loss
    assert torch.isfinite(loss)


def test_regression_is_still_refused():
    model = build(BY_NAME["bert"])
    model.config.problem_type = "regression"
    with pytest.raises(ValueError, match=r"problem_type='regression'.*'multi_label_classification'"):
        MultiMixHead(model)


# ---------------------------------------------------------------------------------------------
# Integrations


def _tiny_bert(seed=0, num_labels=C):
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                     num_labels=num_labels, problem_type="multi_label_classification", hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(cfg)


def _separable(n, seed, length=8, labels=4):
    """Label k is present when token 5 + k occurs in the sequence (each with probability 1/2)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(20, 50, (n, length), generator=g)
    y = (torch.rand(n, labels, generator=g) < 0.5).float()
    for k in range(labels):
        pos = torch.randint(0, length, (n,), generator=g)
        ids[y[:, k] > 0, pos[y[:, k] > 0]] = 5 + k
    return ids, y


def test_trainer_runs_with_float_multi_hot_labels(tmp_path):
    ids, y = _separable(12, 0, labels=C)
    ds = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "labels": y.tolist()})  # floats, as run_classification
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], disable_tqdm=True,
                             save_strategy="no", per_device_train_batch_size=4, max_steps=3, learning_rate=1e-3,
                             seed=0, dataloader_num_workers=0)
    model = _tiny_bert()
    trainer = MultiMixTrainer(model=model, args=args, train_dataset=ds, eval_dataset=ds, n=50)
    assert trainer.model.task == "multi_label"
    result = trainer.train()
    assert result.global_step == 3 and torch.isfinite(torch.tensor(result.training_loss))
    metrics = trainer.evaluate()
    with torch.no_grad():
        own = model.eval()(input_ids=ids, labels=y).loss.item()
    assert metrics["eval_loss"] == pytest.approx(own, rel=1e-4)


def test_timm_task_trains_with_bce_as_train_py_bce_loss():
    model = _model("timm").train()
    task = MultiMixTask(model, BinaryCrossEntropy(smoothing=0.1), task="multi_label", n=20, verbose=False)
    x = _inputs("timm", 4)["x"]
    task(x, Y)["loss"].backward()  # multi-hot targets
    ids = torch.tensor([0, 2, 1, 0])  # class ids become smoothed one-hot targets, as timm's BinaryCrossEntropy does
    head = MultiMixHead(model, task="multi_label", n=20, prob=0.0).train()
    expected = head(x, labels=F.one_hot(ids, C).float() * 0.9 + 0.1 / C).loss
    task.head.multimix_config = task.head.multimix_config.replace(prob=0.0)
    torch.testing.assert_close(task(x, ids)["loss"], expected)
    with pytest.raises(ValueError, match=r"task='multi_label'.*cannot use the criterion CrossEntropyLoss"):
        MultiMixTask(_model("timm"), torch.nn.CrossEntropyLoss(), task="multi_label", verbose=False)
    with pytest.raises(ValueError, match=r"cannot use the criterion BCEWithLogitsLoss.*task='multi_label'"):
        MultiMixTask(_model("timm"), torch.nn.BCEWithLogitsLoss(), verbose=False)


def test_a_seeded_run_learns_a_separable_multi_label_problem():
    train_ids, train_y = _separable(256, 0)
    test_ids, test_y = _separable(128, 1)
    model = _tiny_bert(num_labels=4)
    head = MultiMixHead(model, n=100).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for step in range(120):
        idx = torch.randint(0, 256, (32,))
        loss = head(input_ids=train_ids[idx], labels=train_y[idx]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        logits = head.eval()(input_ids=test_ids).logits
    # Chance: mAP about 0.5 (half the labels present; 0.50 at initialisation); predicting every class
    # gives micro F1 2p / (1 + p) = 0.67 (0.64 at initialisation). Measured after training: 0.87 and 0.83.
    assert mean_average_precision(logits, test_y) > 0.8
    assert multilabel_f1(logits, test_y, threshold=0.0)["micro_f1"] > 0.75


# ---------------------------------------------------------------------------------------------
# Metrics


def test_metrics_match_sklearn():
    from sklearn import metrics as sk  # the "data" extra, which the test command installs
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(40, 5, generator=g)
    targets = (torch.rand(40, 5, generator=g) < 0.4).float()
    targets[:, 4] = 0  # a class without positives: left out of the mAP, F1 1 when nothing is predicted
    scores[:, 4] = -1.0
    expected = sk.average_precision_score(targets[:, :4].numpy(), scores[:, :4].numpy(), average="macro")
    assert mean_average_precision(scores, targets) == pytest.approx(expected, rel=1e-6)
    f1 = multilabel_f1(scores, targets, threshold=0.0)
    pred = (scores > 0).numpy()
    assert f1["micro_f1"] == pytest.approx(sk.f1_score(targets.numpy(), pred, average="micro"))
    assert f1["macro_f1"] == pytest.approx(sk.f1_score(targets.numpy(), pred, average="macro", zero_division=1.0))
    with pytest.raises(ValueError, match=r"both be \[m, c\]"):
        multilabel_f1(scores, targets[:, :3])
