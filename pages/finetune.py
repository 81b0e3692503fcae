"""Fine-tuning: launch GMIC fine-tuning runs (feature extraction, full, from scratch) over a
learning-rate sweep as background processes, watch their loss curves live (figure 6.7), cancel
or resume them, and compare each child model with its parent (table 6.2). `python -m core train`
launches the same runs and `python -m core runs` lists them."""
import streamlit as st

from core.reports import training
from core.store import Store
from models.inference.preprocess import PREPROCESS_FILTERS
from models.training.recipe import MODES
from ui import cached, download_popover, read_only_notice, settings, test_set
from ui.links import model_url
from ui.tables import readable
from ui.sidebar import ALL
from ui.training import REFRESH_S, follow_default, launch, parse_lrs, run_panel
from ui.text import md_escape

LABELS = {"feature-extraction": "Feature extraction", "full": "Full fine-tuning",
          "scratch": "From scratch", "none": "None", "histeq": "Histogram equalisation",
          "unsharp": "Unsharp masking", "sobel": "Sobel"}


def _pick(names: list[str], word: str) -> int:
    """The first name containing ``word`` (train, val), else the first."""
    return next((i for i, n in enumerate(names) if word in n), 0)


st.title("Fine-tuning GMIC")
st.caption("The study fine-tuned GMIC, trained on every cancer type, on ILC and healthy images: "
           "feature extraction against full fine-tuning, ten learning rates between 1e-6 and "
           "1e-5, 40 epochs, the best epoch by validation loss kept, a from-scratch control. "
           "Runs train in the background: they go on when this tab is closed.")
read_only = settings().demo_mode
known_sets = cached(Store.testset_names)
models = cached(Store.models)
dataset = st.session_state.get("dataset", ALL)
if gaps := cached(training.finetune_gaps, dataset=None if dataset == ALL else dataset):
    st.info("\n".join(f"- {md_escape(g)}" for g in gaps), icon=":material/info:")

with st.expander("Launch runs", expanded=cached(training.run_table).empty,
                 icon=":material/rocket_launch:"):
    if not read_only_notice("Launching fine-tuning runs"):
        gmic = models.loc[models["kind"] == "gmic", "model"].tolist() or ["gmic-demo"]
        left, right = st.columns(2)
        parent = left.selectbox("Parent model", gmic, key="ft_parent", bind="query-params",
                                accept_new_options=True,
                                help="A GMIC model of the store, or type a checkpoint path")
        mode = right.segmented_control("Mode", MODES, format_func=lambda m: LABELS.get(m, m),
                                       default="full", key="ft_mode",
                                       bind="query-params") or "full"
        train_set = left.selectbox("Training set", known_sets, key="ft_train_set",
                                   bind="query-params", index=_pick(known_sets, "train"))
        val_set = right.selectbox("Validation set", known_sets, key="ft_val_set",
                                  bind="query-params", index=_pick(known_sets, "val"))
        rates, count = st.columns([3, 1])
        lr_text = rates.text_input("Learning rates", "1e-6:1e-5", key="ft_lrs", bind="query-params",
                                   help="A range low:high (log-spaced, as many as Runs) or a "
                                        "list: 1e-6, 5e-6, 1e-5")
        runs = count.number_input("Runs", 1, 50, 10, key="ft_runs", bind="query-params",
                                  help="Learning rates in a range (a list sets its own)")
        lrs = parse_lrs(lr_text, int(runs) if ":" in lr_text else None)
        if lrs:
            st.caption("One run per rate: " + ", ".join(training.lr_label(r) for r in lrs))
        epochs_col, batch_col, pre_col, device_col = st.columns(4)
        epochs = epochs_col.number_input("Epochs", 1, 500, 40, key="ft_epochs", bind="query-params")
        batch = batch_col.number_input("Batch size", 1, 256, 8, key="ft_batch",
                                       bind="query-params")
        preprocess = pre_col.selectbox("Preprocessing", list(PREPROCESS_FILTERS),
                                       key="ft_preprocess", bind="query-params",
                                       format_func=lambda m: LABELS.get(m, m))
        device = device_col.selectbox("Device", ["auto", "cpu", "cuda"], key="ft_device",
                                      bind="query-params")
        evaluate = st.multiselect("Evaluate the best checkpoint on", known_sets, key="ft_evaluate",
                                  bind="query-params",
                                  default=[t for t in ("test-ILC", "test-all") if t in known_sets])
        if st.button(f"Launch {len(lrs or ())} runs", type="primary", key="ft_launch",
                     icon=":material/rocket_launch:", disabled=not lrs):
            if started := launch(model_init=parent, mode=mode, train_set=train_set,
                                 val_set=val_set, lrs=tuple(lrs), epochs=int(epochs),
                                 batch_size=int(batch), preprocess=preprocess, device=device,
                                 evaluate=tuple(evaluate)):
                st.session_state.ft_started = started
                st.rerun()
    if started := st.session_state.pop("ft_started", None):
        st.success(f"Started {len(started)} runs in the background: "
                   f"{md_escape(', '.join(started))}",
                   icon=":material/rocket_launch:")

st.subheader("Runs")
polling = cached(training.run_table, status="running")["state"].ne("worker gone").any()
st.fragment(run_panel, run_every=REFRESH_S if polling else None)(polling=polling,
                                                                 read_only=read_only)

st.subheader("Finished runs against their parent")
runs = cached(training.run_table, status="done")
evaluated = training.evaluation_test_sets(runs, known_sets)
chosen = st.multiselect("Test sets", known_sets, default=follow_default("ft_test_sets", evaluated),
                        key="ft_test_sets", bind="query-params")
if not runs["child"].notna().any():
    st.caption("A run's model is compared with its parent here once the run has finished.")
elif not chosen:
    st.info("Pick at least one test set.", icon=":material/info:")
else:
    table = cached(training.finished_runs, test_sets=tuple(chosen))
    wide = training.finished_wide(table).assign(
        lr=lambda f: f["lr"].map(training.lr_label),
        benchmark=lambda f: [model_url("benchmark", m, test_set=test_set()) for m in f["child"]],
        saliency=lambda f: [model_url("saliency", m, test_set=test_set()) for m in f["child"]])
    link = st.column_config.LinkColumn
    readable(wide, key="ft_finished", column_config={
        "benchmark": link("Benchmark", display_text="open in Benchmark"),
        "saliency": link("Saliency", display_text="open in Saliency")})
    st.caption("AUC [95 % DeLong CI] of each run's model (its best checkpoint) and of its "
               "parent on the same images; p: paired DeLong test, child against parent. The "
               "links open the model beside its parent on the Benchmark and Saliency pages.")
    with st.expander("All numbers (full precision)"):
        readable(table, key="ft_finished_numbers", exact=True)
    download_popover("finetune_finished_runs", "ft_finished", frame=table)
