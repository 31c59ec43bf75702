"""Student games (`lab2048 generate --agent`), the teacher's labels in training, and self-play
(`train.mode = "td"`)."""

import json

import numpy as np
import pytest
import torch

from lab2048.data.check import check_dataset, format_report
from lab2048.data.config import GenerateConfig
from lab2048.data.dataset import STEP_DTYPE, Dataset, default_dataset, read_run_table, teacher_moves
from lab2048.data.fingerprint import file_sha256
from lab2048.data.generate import generate, staging_dir
from lab2048.data.sidecar import read_meta
from lab2048.errors import UserError
from lab2048.model import Model, ModelConfig, ValueHeadConfig, save_init
from lab2048.play.agents import make_agent
from lab2048.play.config import parse_agent
from lab2048.play.games import play_lockstep
from lab2048.teacher import search
from lab2048.teacher.config import TeacherConfig
from lab2048.train.config import load_train_config
from lab2048.train.trainer import train

LABEL = TeacherConfig(depth=1)
TINY = {"hidden": 32, "layers": 1, "heads": 2, "kv_heads": 1, "mlp": 64}


def _rows(root):
    return np.concatenate([np.load(p) for p in sorted(root.glob("steps-*.npy"))])


def _greedy(tmp_path, name, **kw):
    cfg = dict(out=str(tmp_path / name), games=3, seed=40, agent="greedy", teacher=LABEL,
               max_moves=120)
    return generate(GenerateConfig(**(cfg | kw)), progress=False)


def test_student_games_are_the_agents_games_labelled_by_the_teacher(tmp_path):
    _greedy(tmp_path, "s")
    root = tmp_path / "s"
    report = check_dataset(root)
    assert report.ok and report.ev_legal_differs == 0, format_report(report)
    rows = _rows(root)
    runs = read_run_table(root / "metadata.db")
    # the same games as the agent plays in `lab2048 evaluate` on those seeds
    played = play_lockstep(make_agent(parse_agent("greedy")), np.arange(40, 43), 120)
    assert [r.max_score for r in runs] == played.scores.tolist()
    assert [r.steps for r in runs] == played.moves.tolist()
    assert {r.source for r in runs} == {"agent:greedy"}
    # each row: the move the agent made, and the teacher's search of the board
    for i in np.linspace(0, len(rows) - 1, 12).astype(int):
        evs, best, legal, value = search(int(rows["board"][i]), int(rows["tile_65536_mask"][i]),
                                         LABEL)
        assert rows["branch_evs"][i].tolist() == evs.tolist()
        assert rows["ev_legal"][i] == legal and rows["board_eval"][i] == value
        label = teacher_moves(rows[i:i + 1])[0]
        assert label == best or evs[label] == evs[best]  # the teacher's move, or as good
    teacher = teacher_moves(rows)
    assert 0.2 < np.mean(teacher == rows["move_dir"]) < 1.0  # greedy is not the teacher
    assert not staging_dir(root).exists()


def test_include_copies_runs_and_the_agent_runs_follow(tmp_path):
    base = default_dataset()
    _greedy(tmp_path, "mix", include=str(base), include_where="id <= 3")
    root = tmp_path / "mix"
    runs = read_run_table(root / "metadata.db")
    included = [r for r in read_run_table(base / "metadata.db") if r.id <= 3]
    assert runs[:3] == included
    top = max(r.id for r in read_run_table(base / "metadata.db"))
    assert [r.id for r in runs[3:]] == [top + 1, top + 2, top + 3]
    rows, src = _rows(root), _rows(base)
    assert rows[np.isin(rows["run_id"], [1, 2, 3])].tobytes() == \
        src[np.isin(src["run_id"], [1, 2, 3])].tobytes()
    assert check_dataset(root).ok
    with pytest.raises(UserError, match="already exists"):
        _greedy(tmp_path, "mix", include=str(base))


def test_interrupted_student_games_resume_to_the_same_dataset(tmp_path, monkeypatch):
    _greedy(tmp_path, "whole")
    import lab2048.data.generate as gen

    real, calls = gen.stage_game, []

    def interrupted(staging, index, arrays):
        if calls:
            raise KeyboardInterrupt
        calls.append(index)
        return real(staging, index, arrays)

    monkeypatch.setattr(gen, "stage_game", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _greedy(tmp_path, "again")
    monkeypatch.setattr(gen, "stage_game", real)
    assert len(list(staging_dir(tmp_path / "again").glob("game-*.npz"))) == 1
    summary = _greedy(tmp_path, "again")
    assert summary["played_now"] == 2
    assert _rows(tmp_path / "again").tobytes() == _rows(tmp_path / "whole").tobytes()


def test_agent_options_are_checked():
    with pytest.raises(ValueError, match="needs --init"):
        GenerateConfig(out="x", agent="value:depth=1")
    with pytest.raises(ValueError, match="teacher plays"):
        GenerateConfig(out="x", agent="teacher")
    with pytest.raises(ValueError, match="go with --agent"):
        GenerateConfig(out="x", include="y")
    with pytest.raises(ValueError, match="unknown agent"):
        GenerateConfig(out="x", agent="wizard")


def test_teacher_moves_golden_values():
    move = np.array([0, 2, 3, 1], np.uint8)
    evs = np.array([[1, 3, 2, 0],  # legal 0,1,2: the teacher's is 1
                    [5, 9, 5, 0],  # 1 is illegal: 0 and 2 tie, the recorded 2 stays
                    [0, 0, 0, 7],  # the recorded move is the best
                    [4, 1, 9, 9]], np.float32)  # 2 and 3 illegal: 0
    legal = np.array([0b0111, 0b0101, 0b1111, 0b0011], np.uint8)
    rows = np.zeros(4, STEP_DTYPE)
    rows["move_dir"], rows["branch_evs"], rows["ev_legal"] = move, evs, legal
    assert teacher_moves(rows).tolist() == [1, 2, 3, 0]


@pytest.fixture(scope="module")
def start_init(tmp_path_factory):
    torch.manual_seed(0)
    model = Model(ModelConfig(**TINY, value_head=ValueHeadConfig(enabled=True, prior=300.0)))
    return save_init(model, tmp_path_factory.mktemp("td") / "start")


def _td(start, out, **sets):
    overrides = [f"train.init='{start}'", f"train.out='{out}'", "train.steps=4",
                 "train.batch_size=16", "train.eval_every=4", "train.checkpoint_every=4",
                 "train.threads=1", "train.progress=false", "selfplay.games=3",
                 "selfplay.max_moves=25", "selfplay.agent='policy'"]
    overrides += [f"{k}={v}" for k, v in sets.items()]
    text = ("[model]\nhidden = 32\nlayers = 1\nheads = 2\nkv_heads = 1\nmlp = 64\n"
            "[model.value_head]\nenabled = true\n"
            "[objective]\ntarget_kind = 'lambda'\npolicy_label = 'teacher'\n"
            "[train]\nmode = 'td'\n")
    path = out.parent / f"{out.name}.toml"
    path.write_text(text)
    return load_train_config(path, overrides)


def test_selfplay_rounds_buffer_targets_and_resume(start_init, tmp_path):
    out = tmp_path / "td"
    train(_td(start_init, out, **{"selfplay.rounds": 1, "selfplay.buffer": 2}))
    first = (out / "round-000" / "buffer" / "steps-00000.npy").read_bytes()
    # resuming with more rounds keeps round 0 and plays round 1 from its model
    metrics = train(_td(start_init, out, **{"selfplay.rounds": 2, "selfplay.buffer": 2}),
                    resume=True)
    assert metrics["rounds"] == 2
    assert (out / "round-000" / "buffer" / "steps-00000.npy").read_bytes() == first
    log = [json.loads(x) for x in (out / "selfplay.jsonl").read_text().splitlines()]
    assert [r["round"] for r in log] == [0, 1] and log[1]["buffer_runs"] == 6
    ids = [r.id for r in read_run_table(out / "round-001" / "buffer" / "metadata.db")]
    assert ids == [1, 2, 3, 4, 5, 6]  # buffer 2: both rounds' games
    meta = read_meta(out / "round-001" / "buffer" / "values.json")
    assert meta["kind"] == "lambda" and meta["lam"] == 0.8
    assert meta["bootstrap"] == file_sha256(out / "round-000" / "train" / "init" /
                                            "model.safetensors")
    assert (out / "init" / "model.safetensors").read_bytes() == \
        (out / "round-001" / "train" / "init" / "model.safetensors").read_bytes()
    assert (out / "selfplay.png").exists()
    recorded = json.loads((out / "init" / "training-config.json").read_text())
    assert recorded["train"]["mode"] == "td" and recorded["selfplay"]["rounds"] == 2
    ds = Dataset(out / "round-001" / "buffer")
    assert ds.session["agent"] == "policy"
    # a window of one round keeps only that round's games
    one = tmp_path / "one"
    train(_td(start_init, one, **{"selfplay.rounds": 2, "selfplay.buffer": 1}))
    assert [r.id for r in read_run_table(one / "round-001" / "buffer" / "metadata.db")] == \
        [4, 5, 6]


def test_selfplay_config_is_checked(start_init, tmp_path):
    with pytest.raises(UserError, match="target_kind = 'lambda'"):
        train(_td(start_init, tmp_path / "a", **{"objective.target_kind": "'monte_carlo'"}))
    with pytest.raises(UserError, match="policy_label = 'teacher'"):
        train(_td(start_init, tmp_path / "b", **{"objective.policy_label": "'move'"}))
    with pytest.raises(UserError, match="needs a model with a value head"):
        train(_td(start_init, tmp_path / "b", **{"model.value_head.enabled": "false"}))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="already exists"):
        train(_td(start_init, tmp_path / "c"))
    with pytest.raises(UserError, match="not a self-play run"):
        train(_td(start_init, tmp_path / "c"), overwrite=True)
    assert (tmp_path / "c" / "keep.txt").read_text() == "mine"


def test_offline_agreement_on_student_games_is_with_the_teacher(start_init, tmp_path):
    from lab2048.play.config import EvaluateConfig
    from lab2048.play.ranking import run_ranking

    _greedy(tmp_path, "s")
    rows = _rows(tmp_path / "s")
    summary = run_ranking(EvaluateConfig(agents="greedy", init=str(start_init),
                                         dataset=str(tmp_path / "s"), rows=len(rows),
                                         out=str(tmp_path / "ev")))
    agreement = summary["agents"]["greedy"]["agreement"]["rate"]
    # greedy's own moves, scored against the teacher's: not against themselves
    assert agreement == pytest.approx(np.mean(teacher_moves(rows) == rows["move_dir"]))
    assert agreement < 1.0


def test_include_keeps_the_valuation_types_and_refuses_a_clash(tmp_path):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(default_dataset(), base)
    types = json.loads((base / "valuation_types.json").read_text())
    (base / "valuation_types.json").write_text(json.dumps({**types, "custom": 7}))
    _greedy(tmp_path, "mix", include=str(base), include_where="id <= 1", games=1)
    written = json.loads((tmp_path / "mix" / "valuation_types.json").read_text())
    assert written == {**types, "custom": 7}
    (base / "valuation_types.json").write_text(json.dumps({**types, "search": 9}))
    with pytest.raises(UserError, match="valuation type ids differ"):
        _greedy(tmp_path, "clash", include=str(base))
