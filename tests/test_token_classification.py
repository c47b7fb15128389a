"""Token classification (named entities) with MultiMix: the CoNLL reader, entity scores, the token
loss through MultiMixHead on *ForTokenClassification models, MultiMixTrainer and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers as tf

from hf_multimix.data.conll import align_labels, is_conll_file, read_conll, sort_tags, write_conll
from hf_multimix.token_metrics import entity_scores, entity_spans, is_bio_tag, tags_from_ids

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Entity scores


def test_spans_follow_conlleval_by_default_and_iob2_when_strict():
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-ORG", "B-MISC", "I-MISC"]
    assert entity_spans(tags) == [("PER", 0, 2), ("LOC", 3, 5), ("LOC", 5, 6), ("ORG", 6, 7), ("MISC", 7, 9)]
    # strict IOB2: an I- that opens nothing is no entity
    assert entity_spans(tags, strict=True) == [("PER", 0, 2), ("LOC", 5, 6), ("MISC", 7, 9)]
    assert entity_spans(["I-PER", "B-PER"]) == [("PER", 0, 1), ("PER", 1, 2)]  # B- splits adjacent entities
    assert entity_spans(["B-PER", "I-LOC"]) == [("PER", 0, 1), ("LOC", 1, 2)]  # a type change ends an entity
    assert entity_spans([]) == [] and entity_spans(["O", "O"]) == []
    assert entity_spans(["B_PER", "I_PER"]) == [("PER", 0, 2)]


def test_entity_scores_hand_worked():
    true = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "I-ORG", "I-ORG", "O"], ["O", "B-PER"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG", "O"], ["B-ORG", "I-ORG", "O", "O"], ["O", "B-PER"]]
    s = entity_scores(true, pred)
    # true: PER(0,2) LOC(3,4) | ORG(0,3) | PER(1,2): 4.  predicted: PER(0,2) ORG(3,4) | ORG(0,2) | PER(1,2): 4.
    # correct: the two PER. p = r = 2/4.
    assert (s.true_entities, s.predicted_entities, s.correct_entities) == (4, 4, 2)
    assert s.precision == pytest.approx(0.5) and s.recall == pytest.approx(0.5) and s.f1 == pytest.approx(0.5)
    assert s.per_type["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert s.per_type["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert s.per_type["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}  # 2 predicted, none exact
    assert s.token_accuracy == pytest.approx(9 / 11)
    # unequal precision and recall: one of two true entities found, one extra predicted
    s = entity_scores([["B-PER", "O", "B-LOC"]], [["B-PER", "B-ORG", "O"]])
    assert (s.precision, s.recall, s.f1) == (0.5, 0.5, 0.5)
    s = entity_scores([["B-PER", "O", "B-LOC", "O"]], [["B-PER", "O", "O", "O"]])
    assert (s.precision, s.recall) == (1.0, 0.5) and s.f1 == pytest.approx(2 / 3)
    nothing = entity_scores([["O", "O"]], [["O", "O"]])
    assert (nothing.precision, nothing.recall, nothing.f1, nothing.per_type) == (0.0, 0.0, 0.0, {})


def test_entity_scores_refuse_bad_input_with_the_fix():
    with pytest.raises(ValueError, match="2 true sentences but 1 predicted"):
        entity_scores([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match="sentence 0 has 2 true tags but 1 predicted"):
        entity_scores([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="'S-PER' at token 1 is not O, B-TYPE or I-TYPE"):
        entity_scores([["O", "S-PER"]], [["O", "O"]])
    with pytest.raises(TypeError, match="a list of tags per sentence"):
        entity_scores(["B-PER"], ["B-PER"])
    assert [is_bio_tag(t) for t in ("O", "B-X", "NN", "B-")] == [True, True, False, False]


def test_entity_scores_match_seqeval():
    import seqeval.metrics as seqeval  # the reference implementation (the test extra installs it)

    true = [["B-PER", "I-PER", "O", "I-LOC", "B-LOC"], ["B-ORG", "I-ORG", "O", "B-MISC"]]
    pred = [["B-PER", "O", "O", "B-LOC", "B-LOC"], ["B-ORG", "I-ORG", "O", "I-MISC"]]
    s = entity_scores(true, pred)
    assert s.f1 == pytest.approx(seqeval.f1_score(true, pred))
    assert s.precision == pytest.approx(seqeval.precision_score(true, pred))


def test_tags_from_ids_drop_ignored_positions():
    true, pred = tags_from_ids([[0, 1, 2, 2], [1, 1]], [[-100, 1, 2, -100], [0, -100]], ["O", "B-PER", "I-PER"])
    assert true == [["B-PER", "I-PER"], ["O"]] and pred == [["B-PER", "I-PER"], ["B-PER"]]


# ---------------------------------------------------------------------------------------------
# The CoNLL reader


def test_reader_reads_sentences_skips_docstart_and_takes_the_last_column(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\n"
                    "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n")
    data = read_conll(path)
    assert data.tokens == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert data.tags == [["B-ORG", "O"], ["B-PER", "I-PER"]]
    assert data.tag_names == ("O", "B-ORG", "B-PER", "I-PER")
    assert read_conll(path, tag_column=1).tags[0] == ["NNP", "VBZ"]
    assert data.label_ids(data.tag_names) == [[1, 0], [2, 3]]
    with pytest.raises(ValueError, match=r"tag\(s\) \['B-ORG'\] that are not among the tags trained on"):
        data.label_ids(("O", "B-PER", "I-PER"))


def test_reader_errors_name_the_line_and_the_fix(tmp_path):
    one = tmp_path / "one.conll"
    one.write_text("EU B-ORG\nrejects\n")
    with pytest.raises(ValueError, match=r"line 2 has one column \('rejects'\); a CoNLL file has a token and a tag"):
        read_conll(one)
    ragged = tmp_path / "ragged.conll"
    ragged.write_text("EU NNP B-ORG\nrejects O\n")
    with pytest.raises(ValueError, match="line 2 has 2 columns but line 1 has 3: ragged columns"):
        read_conll(ragged)
    with pytest.raises(ValueError, match="tag_column=5 but .* has 3 columns"):
        read_conll(tmp_path / "ragged.conll", tag_column=5)
    empty = tmp_path / "empty.conll"
    empty.write_text("-DOCSTART- O\n\n\n")
    with pytest.raises(ValueError, match="holds no sentences"):
        read_conll(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_conll(tmp_path / "missing.conll")


def test_detection_by_extension_or_content(tmp_path):
    conll = tmp_path / "data.txt"
    write_conll(conll, [["Anna", "lives", "in", "Oslo"]], [["B-PER", "O", "O", "B-LOC"]])
    assert is_conll_file(conll) and is_conll_file(tmp_path / "missing.iob")
    prose = tmp_path / "notes.txt"
    prose.write_text("this is a sentence\nand another one\n")
    csv = tmp_path / "data.csv"
    csv.write_text("text,label\nhello O,O\n")
    assert not is_conll_file(prose) and not is_conll_file(csv)
    assert sort_tags({"I-LOC", "B-PER", "O", "B-LOC"}) == ("O", "B-LOC", "I-LOC", "B-PER")


def test_alignment_labels_first_word_pieces_only():
    assert align_labels([None, 0, 0, 1, 2, 2, 2, None, None], [4, 1, 2]) == [-100, 4, -100, 1, 2, -100, -100, -100,
                                                                                 -100]


# ---------------------------------------------------------------------------------------------
# The loss

from hf_multimix import MultiMixConfig, MultiMixHead  # noqa: E402
from hf_multimix.functional import sample_lambda  # noqa: E402
from hf_multimix.losses import token_clean_loss, token_multimix_loss  # noqa: E402

C = 5
_TINY = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
             max_position_embeddings=64, num_labels=C, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
#: One tiny token classifier per family, dropout off (so a training forward is the model's own forward).
FAMILIES = {
    "bert": lambda: tf.BertForTokenClassification(tf.BertConfig(**_TINY, pad_token_id=0)),
    "roberta": lambda: tf.RobertaForTokenClassification(tf.RobertaConfig(**_TINY, pad_token_id=1)),
    "electra": lambda: tf.ElectraForTokenClassification(tf.ElectraConfig(**_TINY, embedding_size=32, pad_token_id=0)),
    "distilbert": lambda: tf.DistilBertForTokenClassification(tf.DistilBertConfig(
        vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=37, max_position_embeddings=64, num_labels=C,
        dropout=0.0, attention_dropout=0.0, pad_token_id=0)),
}

#: The layer each family mixes the input of (the support matrix, docs/support.md, prints it).
FINAL_LAYERS = {"bert": "classifier", "roberta": "classifier", "electra": "classifier", "distilbert": "classifier"}


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return FAMILIES[name]()


def _batch(lengths: list[int], pad_to: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Sentences of `lengths` tokens (CLS ... SEP: the first and last position unlabelled, one word piece in
    three unlabelled), right-padded to `pad_to` (default the longest) with labels -100 and mask 0."""
    g = torch.Generator().manual_seed(seed)
    width = pad_to or max(lengths)
    ids = torch.full((len(lengths), width), 0, dtype=torch.long)
    labels = torch.full((len(lengths), width), -100, dtype=torch.long)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(5, 100, (n,), generator=g)
        mask[i, :n] = 1
        labels[i, 1 : n - 1] = torch.randint(0, C, (n - 2,), generator=g)
        labels[i, 2 : n - 1 : 3] = -100  # later word pieces
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _manual_token_loss(logits, labels, lam, clean_weight):
    """Loops over mixes and positions: weights renormalised over the examples labelled at each position."""
    m, r, c = logits.shape
    terms = []
    for k in range(lam.shape[-1]):
        for j in range(r):
            valid = labels[:, j] != -100
            if not valid.any():
                continue
            w = lam[j, :, k] * valid
            w = w / w.sum()
            mixed = (w[:, None] * logits[:, j]).sum(0)
            target = (w[:, None] * F.one_hot(labels[:, j].clamp_min(0), c).float()).sum(0)
            terms.append(-(target * mixed.log_softmax(-1)).sum())
    clean = F.cross_entropy(logits.reshape(-1, c), labels.reshape(-1), ignore_index=-100)
    return torch.stack(terms).mean() + clean_weight * clean


def test_token_loss_is_per_position_mixing_over_the_labelled_examples():
    torch.manual_seed(0)
    logits = torch.randn(3, 6, C, dtype=torch.float64)
    labels = torch.randint(0, C, (3, 6))
    labels[0, 1] = labels[1, 1] = -100  # one example labelled at position 1
    labels[:, 4] = -100  # position 4: nobody
    lam = sample_lambda(3, 7, 0.7, positions=6).double()
    for cw in (0.0, 1.0):
        got = token_multimix_loss(logits, labels, lam, n=7, clean_weight=cw)
        torch.testing.assert_close(got, _manual_token_loss(logits, labels, lam, cw))
    # the clean term alone is the model's own loss: cross-entropy with ignore_index=-100
    torch.testing.assert_close(token_clean_loss(logits, labels),
                               F.cross_entropy(logits.reshape(-1, C), labels.reshape(-1)))


def test_ignored_positions_carry_no_gradient():
    torch.manual_seed(0)
    logits = torch.randn(4, 7, C, requires_grad=True)
    labels = torch.randint(0, C, (4, 7))
    labels[:, 0] = -100
    labels[1, 3:] = -100
    token_multimix_loss(logits, labels, n=20, clean_weight=1.0).backward()
    ignored = labels == -100
    assert torch.equal(logits.grad[ignored], torch.zeros_like(logits.grad[ignored]))
    assert (logits.grad[~ignored].abs().sum(-1) > 0).all()


def test_token_loss_refuses_bad_labels_with_the_fix():
    logits = torch.randn(2, 4, C)
    with pytest.raises(ValueError, match=r"must be \[m, r\] = \[2, 4\], one class id per position"):
        token_multimix_loss(logits, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="integer class ids"):
        token_multimix_loss(logits, torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"token label 7 at \[1, 2\] is outside \[0, 5\) and is not -100"):
        token_multimix_loss(logits, torch.tensor([[0, 1, 2, 3], [0, 1, 7, -100]]))
    with pytest.raises(ValueError, match="every label of the batch is -100"):
        token_multimix_loss(logits, torch.full((2, 4), -100))


# ---------------------------------------------------------------------------------------------
# The head on *ForTokenClassification models


@pytest.mark.parametrize("name", list(FAMILIES))
def test_identical_examples_give_one_plus_clean_weight_times_the_models_token_cross_entropy(name):
    model = _model(name)
    one = _batch([9, 6], pad_to=11)
    batch = {k: v[:1].repeat(4, 1) for k, v in one.items()}
    own = model(**batch).loss  # the model's own loss, from its labels
    for cw in (0.0, 1.0, 0.5):
        head = MultiMixHead(model, n=30, clean_weight=cw).train()
        assert head.multimix_config.task == "token"
        torch.testing.assert_close(head(**batch).loss, own * (1 + cw), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_the_generic_path_finds_the_token_head(name):
    head = MultiMixHead(_model(name), n=10).train()
    head(**_batch([6, 4])).loss.backward()
    assert type(head.adapter).__name__ == "HFGenericAdapter" and head.adapter.token_classifier
    assert head.adapter.final_layer_name == FINAL_LAYERS[name]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_padding_a_batch_further_changes_nothing(name):
    head = MultiMixHead(_model(name), n=40).train()
    losses = []
    for pad_to in (None, 13, 20):
        torch.manual_seed(3)
        losses.append(head(**_batch([7, 10, 5], pad_to=pad_to, seed=1)).loss)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses[2], losses[0], rtol=1e-5, atol=1e-6)


def test_ignored_positions_get_no_gradient_through_the_head():
    model = _model("bert")
    head = MultiMixHead(model, n=30).train()
    seen = []
    def keep(module, args, out):
        out.retain_grad()
        seen.append(out)

    hook = model.classifier.register_forward_hook(keep)
    batch = _batch([8, 11, 6])
    head(**batch).loss.backward()
    hook.remove()
    grad = seen[-1].grad
    ignored = batch["labels"] == -100
    assert torch.equal(grad[ignored], torch.zeros_like(grad[ignored]))
    assert (grad[~ignored].abs().sum(-1) > 0).all()
    assert model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(FAMILIES))
def test_eval_passthrough_is_exactly_the_model(name):
    model = _model(name).eval()
    head = MultiMixHead(model, n=30).eval()
    batch = _batch([9, 6, 4])
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    plain = model(**inputs)
    out = head(**inputs)
    assert type(out) is type(plain) and torch.equal(out.logits, plain.logits)
    with_labels = head(**batch)
    torch.testing.assert_close(with_labels.loss, model(**batch).loss)  # the model's own token loss
    assert torch.equal(with_labels.logits, plain.logits)
    assert model.config.problem_type is None  # the labels never reached the model


def test_task_is_read_from_the_model_and_checked():
    model = _model("bert")
    with pytest.raises(ValueError, match="task='multi_label' but BertForTokenClassification labels every token"):
        MultiMixHead(model, task="multi_label")
    seq = tf.BertForSequenceClassification(tf.BertConfig(**_TINY))
    with pytest.raises(ValueError, match="task='token' needs a model that labels every token"):
        MultiMixHead(seq, task="token")
    with pytest.raises(ValueError, match="task='token' takes attention='uniform'"):
        MultiMixHead(model, dense=True, attention="pooled")
    with pytest.raises(ValueError, match="task='token' cannot use mixing='class-balanced'"):
        MultiMixConfig(task="token", mixing="class-balanced")
    head = MultiMixHead(model, MultiMixConfig(n=10))
    head.multimix_config = MultiMixConfig(n=20)  # task None: the model's, kept
    assert head.multimix_config.task == "token" and head.n == 20
    with pytest.raises(ValueError, match="cannot change after construction"):
        head.multimix_config = MultiMixConfig(task="single_label")
    batch = _batch([5, 6])
    with pytest.raises(ValueError, match="one class id per position"):
        head.train()(input_ids=batch["input_ids"], labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="outside"):
        head.train()(input_ids=batch["input_ids"], labels=batch["labels"].clamp_min(0) + C)


@pytest.mark.parametrize("options", [dict(mixing="pairwise"), dict(per_position=False), dict(distill_weight=0.5),
                                     dict(distill_weight=0.5, teacher="ema"), dict(prob=0.0)],
                         ids=["pairwise", "shared-lambda", "self-distill", "ema-distill", "no-mixing"])
def test_options_train_and_reach_the_encoder(options):
    model = _model("bert")
    head = MultiMixHead(model, n=20, **options).train()
    loss = head(**_batch([8, 5, 7])).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert model.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


def test_a_seeded_run_learns_a_token_problem():
    """Each token's tag is its id modulo C: a few dozen MultiMix steps must learn it (the loss points the
    right way), and better than the untrained model."""
    model = _model("bert")
    head = MultiMixHead(model, n=100).train()
    batch = _batch([12, 9, 12, 7, 10, 12, 8, 11], seed=5)
    labels = torch.where(batch["labels"] == -100, batch["labels"], batch["input_ids"] % C)
    batch["labels"] = labels
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def accuracy() -> float:
        with torch.no_grad():
            pred = head.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.argmax(-1)
        head.train()
        keep = labels != -100
        return float((pred[keep] == labels[keep]).float().mean())

    before = accuracy()
    torch.manual_seed(0)
    for _ in range(40):
        loss = head(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert accuracy() > max(0.9, before + 0.3)


def test_peft_lora_token_classifier_trains_through_the_root_forward():
    import peft  # the test extra installs it
    model = peft.get_peft_model(_model("bert"), peft.LoraConfig(task_type="TOKEN_CLS", r=4, target_modules=["query"]))
    head = MultiMixHead(model, n=20)
    assert head.multimix_config.task == "token"
    head.train()(**_batch([8, 6])).loss.backward()
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    assert lora and all(p.grad is not None for p in lora)
    head.eval()
    inputs = {k: v for k, v in _batch([8, 6]).items() if k != "labels"}
    assert torch.equal(head(**inputs).logits, model(**inputs).logits)


# ---------------------------------------------------------------------------------------------
# MultiMixTrainer and the command line

_PEOPLE = ["Anna", "Boris", "Chen", "Dara", "Emil", "Farah"]
_PLACES = ["Oslo", "Lima", "Quito", "Hanoi", "Accra"]
_FIRMS = [["Acme", "Corp"], ["Globex"], ["Initech", "Ltd"]]


def _sentences(n: int, seed: int) -> tuple[list[list[str]], list[list[str]]]:
    """`n` template sentences with PER, LOC and ORG entities (the CLI test's CoNLL data)."""
    import random

    rng = random.Random(seed)
    tokens, tags = [], []
    for _ in range(n):
        who, where, firm = rng.choice(_PEOPLE), rng.choice(_PLACES), rng.choice(_FIRMS)
        words = [who, "joined", *firm, "in", where, "."]
        labels = ["B-PER", "O", "B-ORG", *["I-ORG"] * (len(firm) - 1), "O", "B-LOC", "O"]
        if rng.random() < 0.5:
            words, labels = [where, "welcomed", who, "."], ["B-LOC", "O", "B-PER", "O"]
        tokens.append(words)
        tags.append(labels)
    return tokens, tags


@pytest.fixture(scope="module")
def tiny_text_folder(tmp_path_factory):
    """A tiny BERT base model (no head) with the embedded MiniLM's fast tokenizer, saved as a folder."""
    from hf_multimix.weights import minilm_path

    tokenizer = tf.AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
    torch.manual_seed(0)
    model = tf.BertModel(tf.BertConfig(**{**_TINY, "vocab_size": tokenizer.vocab_size, "num_labels": 2}))
    folder = tmp_path_factory.mktemp("tiny_bert")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, tokenizer


def test_trainer_trains_a_token_classifier_on_collated_batches(tiny_text_folder, tmp_path):
    import datasets

    from hf_multimix.data.conll import ConllData, tokenize_and_align
    from hf_multimix.token_metrics import token_compute_metrics
    from hf_multimix.trainer import MultiMixTrainer

    folder, tokenizer = tiny_text_folder
    data = ConllData(*_sentences(24, 0))
    tags = data.tag_names
    model = tf.AutoModelForTokenClassification.from_pretrained(folder, num_labels=len(tags), local_files_only=True)
    rows = tokenize_and_align(tokenizer, data.tokens, data.label_ids(tags))
    ds = datasets.Dataset.from_list([{**r, "tokens": t} for r, t in zip(rows, data.tokens)])  # "tokens" is dropped
    args = tf.TrainingArguments(str(tmp_path / "out"), per_device_train_batch_size=8, per_device_eval_batch_size=8,
                                num_train_epochs=1, learning_rate=1e-3, report_to=[], save_strategy="no",
                                use_cpu=True, disable_tqdm=True)
    trainer = MultiMixTrainer(model=model, args=args, train_dataset=ds, eval_dataset=ds, n=20,
                              data_collator=tf.DataCollatorForTokenClassification(tokenizer),
                              compute_metrics=token_compute_metrics(tags))
    assert trainer.model.multimix_config.task == "token"
    result = trainer.train()
    assert result.training_loss > 0 and torch.isfinite(torch.tensor(result.training_loss))
    scores = trainer.evaluate()
    assert {"eval_f1", "eval_precision", "eval_recall", "eval_token_accuracy", "eval_f1_PER"} <= set(scores)
    # the reported eval loss is the model's own token cross-entropy, batch by batch
    collate = tf.DataCollatorForTokenClassification(tokenizer)
    model.eval()
    with torch.no_grad():
        own = [model(**collate(rows[i : i + 8])).loss for i in range(0, len(rows), 8)]
    assert scores["eval_loss"] == pytest.approx(float(torch.stack(own).mean()), rel=1e-4)
    assert model.config.problem_type is None


def test_cli_trains_on_conll_files_and_reports_entity_f1(tiny_text_folder, tmp_path, capsys):
    from hf_multimix.cli import main

    folder, _ = tiny_text_folder
    write_conll(tmp_path / "train.conll", *_sentences(40, 1))
    write_conll(tmp_path / "dev.conll", *_sentences(16, 2))
    out = tmp_path / "run"
    argv = ["train", "--dataset", str(tmp_path / "train.conll"), "--val-dataset", str(tmp_path / "dev.conll"),
            "--model", str(folder), "--epochs", "1", "--batch-size", "8", "--n", "20", "--lr", "1e-3",
            "--no-progress", "--output-dir", str(out)]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "token" and metrics["train_sentences"] == 40 and metrics["eval_sentences"] == 16
    assert metrics["tag_names"] == ["O", "B-LOC", "B-ORG", "I-ORG", "B-PER"]
    for key in ("eval_f1", "eval_precision", "eval_recall"):
        assert 0.0 <= metrics[key] <= 1.0
    assert set(metrics["eval_per_type"]) <= {"LOC", "ORG", "PER"} and metrics["eval_entities"] > 0
    assert metrics["multimix_config"]["task"] == "token"
    assert (out / "checkpoint-best" / "model.safetensors").exists()
    assert "entity F1" in capsys.readouterr().out
    # evaluate reads the checkpoint back: the same model on the same sentences gives the same scores
    assert main(["evaluate", "--checkpoint", str(out), "--dataset", str(tmp_path / "dev.conll")]) == 0
    report = json.loads((out / "evaluation.json").read_text())
    assert report["f1"] == pytest.approx(metrics["eval_f1"]) and report["per_type"] == metrics["eval_per_type"]
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(out), str(tmp_path / "dev.conll")]) == 2
    assert "is a token classifier; 'predict' labels whole inputs" in capsys.readouterr().err
    csv = tmp_path / "texts.csv"
    csv.write_text("text,label\nAnna joined Acme,a\nOslo welcomed Boris,b\n")
    assert main(["evaluate", "--checkpoint", str(out), "--dataset", str(csv)]) == 2
    assert "is a token classifier; evaluate it on a CoNLL file" in capsys.readouterr().err


def test_cli_compare_runs_paired_methods_on_conll(tiny_text_folder, tmp_path):
    from hf_multimix.cli import main

    folder, _ = tiny_text_folder
    write_conll(tmp_path / "train.conll", *_sentences(24, 4))
    write_conll(tmp_path / "dev.conll", *_sentences(12, 5))
    out = tmp_path / "cmp"
    assert main(["compare", "--dataset", str(tmp_path / "train.conll"), "--val-dataset", str(tmp_path / "dev.conll"),
                 "--model", str(folder), "--methods", "erm,multimix", "--epochs", "1", "--batch-size", "8", "--n", "10",
                 "--no-progress", "--output-dir", str(out)]) == 0
    rows = json.loads((out / "compare.json").read_text())
    assert [r["method"] for r in rows] == ["erm", "multimix"] and all("eval_f1" in r for r in rows)
    assert rows[0]["multimix_config"]["prob"] == 0.0 and rows[1]["multimix_config"]["prob"] == 1.0


def test_byte_level_tokenizers_are_loaded_with_a_prefix_space(tmp_path):
    """RoBERTa-style tokenizers need add_prefix_space=True for words given apart (as run_ner.py loads them)."""
    from hf_multimix.token_classification import create_token_classifier

    chars = [chr(c) for c in range(33, 127)] + ["\u0120"]
    (tmp_path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(
        ["<s>", "<pad>", "</s>", "<unk>", "<mask>", *chars])}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = tf.RobertaTokenizerFast(vocab_file=str(tmp_path / "vocab.json"),
                                        merges_file=str(tmp_path / "merges.txt"))
    assert tokenizer.add_prefix_space is False
    folder = tmp_path / "roberta"
    tf.RobertaModel(tf.RobertaConfig(**{**_TINY, "vocab_size": len(chars) + 5}, pad_token_id=1)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    clf = create_token_classifier(str(folder), ["O", "B-PER"])
    assert clf.tokenizer.add_prefix_space is True and type(clf.model).__name__ == "RobertaForTokenClassification"


def test_cli_detects_conll_by_content_and_refuses_per_example_options(tiny_text_folder, tmp_path, capsys):
    from hf_multimix.cli import main

    folder, _ = tiny_text_folder
    write_conll(tmp_path / "train.txt", *_sentences(20, 3))
    common = ["train", "--dataset", str(tmp_path / "train.txt"), "--model", str(folder), "--epochs", "1",
              "--batch-size", "8", "--n", "10", "--no-progress"]
    assert main([*common, "--method", "erm", "--output-dir", str(tmp_path / "erm")]) == 0
    metrics = json.loads((tmp_path / "erm" / "metrics.json").read_text())
    assert metrics["train_sentences"] == 18 and metrics["eval_sentences"] == 2  # 10% held out
    assert main([*common, "--class-counts", "3,3", "--output-dir", str(tmp_path / "bad")]) == 2
    assert "--class-counts need one label per example" in capsys.readouterr().err
    assert main([*common, "--method", "mixup", "--output-dir", str(tmp_path / "bad2")]) == 2
    assert "mixes input images" in capsys.readouterr().err
    bad = tmp_path / "bad.conll"
    bad.write_text("Anna B-PER\nlives\n")
    assert main(["train", "--dataset", str(bad), "--output-dir", str(tmp_path / "bad3")]) == 2
    assert "line 2 has one column" in capsys.readouterr().err


def test_generated_ner_set_is_seeded_valid_conll_with_ambiguous_words(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    import make_ner

    make_ner.main(["--out", str(tmp_path / "a"), "--train", "150", "--dev", "60", "--seed", "3"])
    make_ner.main(["--out", str(tmp_path / "b"), "--train", "150", "--dev", "60", "--seed", "3"])
    assert (tmp_path / "a" / "train.conll").read_bytes() == (tmp_path / "b" / "train.conll").read_bytes()
    train, dev = read_conll(tmp_path / "a" / "train.conll"), read_conll(tmp_path / "a" / "dev.conll")
    assert (len(train), len(dev)) == (150, 60)
    assert {t[2:] for t in train.tag_names if t != "O"} == {"PER", "LOC", "ORG", "MISC"}
    for data in (train, dev):
        for tags in data.tags:
            spans = entity_spans(tags, strict=True)
            assert spans == entity_spans(tags)  # valid IOB2: every entity starts with B-
    # the same word is tagged with different types in different sentences: one token does not give its type
    types: dict[str, set[str]] = {}
    for words, tags in zip(train.tokens, train.tags):
        for w, t in zip(words, tags):
            types.setdefault(w, set()).add(t[2:] if t != "O" else "O")
    assert sum(len(v - {"O"}) > 1 for v in types.values()) >= 5
    # most evaluation names were not seen in training
    seen = {w for words in train.tokens for w in words}
    names = [w for words, tags in zip(dev.tokens, dev.tags) for w, t in zip(words, tags) if t.endswith("PER")]
    assert sum(w not in seen for w in names) > len(names) / 3


# ---------------------------------------------------------------------------------------------
# Evaluation across processes


def _sentence_items() -> list[dict[str, torch.Tensor]]:
    lengths = [5, 12, 7, 9, 4, 11, 6]  # 7 sentences: uneven across two processes, lengths differ per batch
    batch = _batch(lengths, seed=9)
    return [{k: v[i, :n] for k, v in batch.items()} for i, n in enumerate(lengths)]


def _pad_collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    width = max(len(it["input_ids"]) for it in items)
    pad = {"input_ids": 0, "attention_mask": 0, "labels": -100}
    return {k: torch.stack([F.pad(it[k], (0, width - len(it[k])), value=pad[k]) for it in items]) for k in pad}


def _token_eval_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), ACCELERATE_USE_CPU="yes")
    torch.set_num_threads(1)
    from accelerate import Accelerator

    from hf_multimix.training import evaluate

    accelerator = Accelerator(cpu=True)
    head = MultiMixHead(_model("bert"), n=10)
    loader = accelerator.prepare(torch.utils.data.DataLoader(_sentence_items(), batch_size=2, collate_fn=_pad_collate))
    result = evaluate(head, loader, accelerator)
    with open(os.path.join(out_dir, f"eval{rank}.json"), "w") as f:
        json.dump(result, f)


def test_evaluation_gathers_token_sequences_of_different_lengths_across_processes(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_token_eval_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"eval{r}.json").read_text()) for r in range(2)]
    # what one process computes over all sentences: every labelled token once
    model = _model("bert").eval()
    batch = _pad_collate(_sentence_items())
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    keep = batch["labels"] != -100
    accuracy = float((logits.argmax(-1)[keep] == batch["labels"][keep]).float().mean())
    for r in results:
        assert r["eval_examples"] == int(keep.sum())
        assert r["eval_accuracy"] == pytest.approx(accuracy)
        assert r["eval_loss"] == pytest.approx(float(F.cross_entropy(logits[keep], batch["labels"][keep])), rel=1e-4)
