"""MultiMixTrainer: a Hugging Face Trainer for MultiMixHead."""

import datasets
import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

from hf_multimix import MultiMixHead
from hf_multimix.trainer import MultiMixOffCallback, MultiMixTrainer


def tiny_bert(seed=0):
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                     num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(cfg)


def dataset(n=8, length=6):
    g = torch.Generator().manual_seed(0)
    return datasets.Dataset.from_dict({
        "input_ids": torch.randint(5, 50, (n, length), generator=g).tolist(),
        "attention_mask": [[1] * length] * n,
        "label": [i % 3 for i in range(n)],
        "text": [f"example {i}" for i in range(n)],  # a column the model does not take: dropped
    })


def args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), use_cpu=True, report_to=[], disable_tqdm=True, save_strategy="no",
                logging_steps=1, seed=0, data_seed=0, dataloader_num_workers=0)
    base.update(kw)
    return TrainingArguments(**base)


def _one_step(tmp_path, batch, accum):
    model = tiny_bert()
    head = MultiMixHead(model, prob=0.0)  # deterministic: the check is about scaling, not mixing
    trainer = MultiMixTrainer(model=head, args=args(tmp_path, per_device_train_batch_size=batch,
                              gradient_accumulation_steps=accum, max_steps=1, learning_rate=1.0, optim="sgd",
                              lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0),
                              train_dataset=dataset())
    result = trainer.train()
    return model, result.training_loss


def test_gradient_accumulation_scaling_matches(tmp_path):
    one, loss_one = _one_step(tmp_path / "a", batch=8, accum=1)
    two, loss_two = _one_step(tmp_path / "b", batch=4, accum=2)
    for p, q in zip(one.parameters(), two.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
    assert loss_one == pytest.approx(loss_two, rel=1e-4)


def test_trains_evaluates_and_saves_plain_checkpoint(tmp_path):
    model = tiny_bert()
    seen = []
    bert_forward = model.bert.forward

    def spy(*a, **kw):
        seen.append(set(kw))
        return bert_forward(*a, **kw)

    model.bert.forward = spy
    head = MultiMixHead(model, n=50, dense=True)
    trainer = MultiMixTrainer(model=head, args=args(tmp_path, per_device_train_batch_size=4, num_train_epochs=1,
                              learning_rate=1e-3), train_dataset=dataset(), eval_dataset=dataset(6))
    trainer.train()
    assert seen and all("labels" not in kw for kw in seen)
    metrics = trainer.evaluate()
    assert "eval_loss" in metrics and metrics["eval_loss"] > 0
    pred = trainer.predict(dataset(6))
    assert isinstance(pred.predictions, np.ndarray) and pred.predictions.shape == (6, 3)  # logits only, no tuple
    trainer.save_model(str(tmp_path / "final"))
    plain = BertForSequenceClassification.from_pretrained(str(tmp_path / "final"), local_files_only=True).eval()
    ids = torch.tensor(dataset(2)["input_ids"])
    model.bert.forward = bert_forward
    torch.testing.assert_close(plain(input_ids=ids).logits, model.eval()(input_ids=ids).logits)
    assert plain.config.problem_type is None


def test_label_smoothing_argument_goes_to_the_head(tmp_path):
    head = MultiMixHead(tiny_bert(), n=10)
    trainer = MultiMixTrainer(model=head, args=args(tmp_path, label_smoothing_factor=0.1), train_dataset=dataset())
    assert head.label_smoothing == 0.1 and trainer.label_smoother is None


def test_callback_turns_multimix_off(tmp_path):
    head = MultiMixHead(tiny_bert(), n=10)
    probs = []

    class Record(MultiMixOffCallback):
        def on_epoch_begin(self, *a, **kw):
            out = super().on_epoch_begin(*a, **kw)
            probs.append((head.mixing_enabled, head.prob))
            return out

    trainer = MultiMixTrainer(model=head, args=args(tmp_path, per_device_train_batch_size=4, num_train_epochs=3),
                              train_dataset=dataset(), callbacks=[Record(after_epoch=2)])
    trainer.train()
    assert probs == [(True, 1.0), (True, 1.0), (False, 1.0)]  # the switch flips; prob stays as configured


def test_trainer_wraps_a_plain_model(tmp_path):
    model = tiny_bert()
    trainer = MultiMixTrainer(model=model, args=args(tmp_path, per_device_train_batch_size=4, max_steps=2),
                              train_dataset=dataset(), eval_dataset=dataset(6), n=20, alpha=0.5)
    assert isinstance(trainer.model, MultiMixHead) and trainer.model.model is model
    assert (trainer.model.n, trainer.model.alpha) == (20, 0.5)
    trainer.train()
    assert "eval_loss" in trainer.evaluate()
    trainer.save_model(str(tmp_path / "final"))
    plain = BertForSequenceClassification.from_pretrained(str(tmp_path / "final"), local_files_only=True).eval()
    assert plain.config.problem_type is None
    ids = torch.tensor(dataset(2)["input_ids"])
    torch.testing.assert_close(plain(input_ids=ids).logits, model.eval()(input_ids=ids).logits)
    from_dict = MultiMixTrainer(tiny_bert(), args(tmp_path), multimix_args={"n": 7, "dense": True})
    assert (from_dict.model.n, from_dict.model.dense) == (7, True)


def test_trainer_options_fail_early_with_the_fix(tmp_path):
    with pytest.raises(TypeError, match=r"got a MultiMixHead and MultiMix options \['n'\]"):
        MultiMixTrainer(model=MultiMixHead(tiny_bert()), args=args(tmp_path), n=10)
    with pytest.raises(TypeError, match=r"unknown MultiMix options \['nn'\]"):
        MultiMixTrainer(model=tiny_bert(), args=args(tmp_path), multimix_args={"nn": 10})
    with pytest.raises(TypeError, match=r"\['n'\] both in multimix_args and as keywords"):
        MultiMixTrainer(model=tiny_bert(), args=args(tmp_path), multimix_args={"n": 10}, n=5)
    with pytest.raises(TypeError, match=r"needs the model: MultiMixTrainer\(model=model"):
        MultiMixTrainer(args=args(tmp_path))
    with pytest.raises(ValueError, match="alpha must be > 0"):
        MultiMixTrainer(model=tiny_bert(), args=args(tmp_path), alpha=-1.0)


def test_trainer_takes_a_multimix_config_saves_it_and_steps_the_teacher(tmp_path):
    from hf_multimix import MultiMixConfig

    config = MultiMixConfig(n=12, clean_weight=0.5, teacher="ema", distill_weight=0.5, ema_auto_update=False)
    trainer = MultiMixTrainer(model=tiny_bert(), args=args(tmp_path, per_device_train_batch_size=4, max_steps=2,
                                                           gradient_accumulation_steps=2),
                              train_dataset=dataset(16), multimix_args=config, alpha=0.5)
    # keywords override the config; mixing="auto" is resolved for the model (one label per example)
    assert trainer.model.multimix_config == config.replace(alpha=0.5, mixing="class-balanced")
    calls = []
    update = trainer.model.update_teacher
    trainer.model.update_teacher = lambda: (calls.append(1), update())[1]
    trainer.train()
    assert len(calls) == 2  # once per optimizer step (4 forwards: 2 steps of 2 accumulated batches)
    trainer.save_model(str(tmp_path / "final"))
    assert MultiMixConfig.from_pretrained(tmp_path / "final") == config.replace(alpha=0.5, mixing="class-balanced")
