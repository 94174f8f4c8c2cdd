"""What each command needs before it starts, checked before it touches the store.

A stage run in the wrong order (encode before caption, train before train-vae, sample before train)
would otherwise fail deep inside its job with a traceback, possibly after taking the store's lock or
dropping columns. These checks read the clips schema and a few files, and refuse in one line that
names what is missing and the command or setting that provides it. The columns' writers come from the
data contract (store/contract.py), so a message always names the stage that really writes a column.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.config import PipelineConfig
from store import CLIPS, Store
from store.contract import COLUMNS
from store.filters import FilterError, check_on, parse_filter

# dedup writes its column as the last step of `reelforge score`: that is the command to run.
_COMMAND_OF_STAGE = {"dedup": "score"}


class PreflightError(RuntimeError):
    """A command cannot start in the store's current state or with this config (one line)."""


def command_writing(column: str) -> str:
    """The reelforge command that adds `column` to clips."""
    stage = COLUMNS[CLIPS][column].stage
    return _COMMAND_OF_STAGE.get(stage, stage)


def require_clip_columns(store: Store, columns: list[str], needed_by: str) -> None:
    """Refuse when clips lacks any of `columns`, naming the first missing one and who writes it."""
    names = set(store.require(CLIPS).schema.names)
    for column in columns:
        if column not in names:
            writer = f"`reelforge {command_writing(column)}`" if column in COLUMNS[CLIPS] else "no stage"
            raise PreflightError(
                f"clips in {store.root} have no '{column}' column, which {needed_by} needs: run {writer} first"
            )


def check_filter(store: Store, expression: str | None, key: str) -> None:
    """Refuse a filter (config `key`) that is not SQL, names a column no stage writes, needs a column
    not written yet (naming the command that writes it) or that Lance cannot plan on these clips."""
    clips = store.require(CLIPS)
    try:
        checked = parse_filter(expression, key, set(COLUMNS[CLIPS]) | set(clips.schema.names))
        require_clip_columns(store, sorted(checked.columns), key)
        check_on(clips, checked)
    except FilterError as err:
        raise PreflightError(str(err)) from None


def check(  # noqa: PLR0912, PLR0915 — one refusal per command and missing input, in order
    command: str, cfg: PipelineConfig, filter_expression: str | None = None, *, train_workers: int = 1
) -> None:
    """Refuse `command` in one line when the store or the config cannot serve it (see module doc).
    `filter_expression` replaces filter.expression (the filter command's --expression);
    `train_workers` is how many ranks `train` runs (each needs a batch an epoch)."""
    store = Store(cfg.store.root)
    if command in ("score", "filter", "report", "train-vae", "caption", "encode", "train"):
        store.require(CLIPS)
    if command == "filter":
        text = cfg.filter.expression if filter_expression is None else filter_expression
        require_clip_columns(store, ["score_error"], "the filter")
        check_filter(store, text, "filter.expression" if filter_expression is None else "--expression")
    elif command == "score":
        from curate.aesthetic import MissingWeightsError
        from pipelines.jobs.score import refuse_missing_weights

        try:
            refuse_missing_weights(cfg.score)
        except (MissingWeightsError, FileNotFoundError) as err:
            raise PreflightError(str(err)) from None
    elif command == "caption":
        from pipelines.jobs.caption_checks import CaptionJobError, check_engine_setup, selection_filter

        caption = cfg.caption
        if caption.filter:
            check_filter(store, caption.filter, "caption.filter")
        try:
            selection_filter(caption, store.require(CLIPS).schema.names)
            check_engine_setup(caption)
        except CaptionJobError as err:
            raise PreflightError(str(err)) from None
    elif command == "train-vae":
        from train.clip_index import TrainDataError
        from train.vae_train import vae_training_index

        check_filter(store, cfg.train.vae_train.filter, "train.vae_train.filter")
        try:
            vae_training_index(cfg.train.vae, cfg.train.vae_train, store.clips_uri)
        except TrainDataError as err:
            raise PreflightError(str(err)) from None
        except ValueError as err:  # the clip shape does not fit the autoencoder's compression
            raise PreflightError(f"train.vae_train.frames/height/width: {err}") from None
    elif command in ("encode", "train"):
        data = cfg.train.data
        require_clip_columns(store, [data.caption_column], f"{command} (train.data.caption_column)")
        check_filter(store, data.filter, "train.data.filter")
        names = set(store.require(CLIPS).schema.names)
        if command == "train" and data.latents == "precomputed" and "latent" not in names:
            raise PreflightError(
                f"train.data.latents=precomputed but clips in {store.root} have no latents: "
                "run `reelforge encode` first"
            )
        _require_text_encoder(cfg, command)
        if command == "encode":
            from train.clip_index import TrainDataError, build_index, no_clips_error

            try:  # what the encode job selects: every clip of the filter that fits a bucket
                index = build_index(store.clips_uri, data.model_copy(update={"latents": "decode"}))
            except TrainDataError as err:
                raise PreflightError(str(err)) from None
            if len(index) == 0:
                raise PreflightError(str(no_clips_error("encode", index, "train.data")))
            _require_vae_weights(cfg, command)
        else:
            from train.clip_index import TrainDataError
            from train.training_clips import training_index

            try:
                index, _, _ = training_index(cfg.train, store.clips_uri, train_workers)
            except TrainDataError as err:
                raise PreflightError(str(err)) from None
            if not index.has_latents:  # train decodes the clips with the VAE
                _require_vae_weights(cfg, command)
    elif command == "sample":
        _require_checkpoint(cfg)


def check_ray_workers(num_workers: int, gpus_per_worker: float = 0.0) -> None:
    """Refuse a Ray Train run that asks for more than the cluster (Ray already started) has: Ray
    Train would wait for the resources forever instead of failing."""
    import ray

    from pipelines.jobs.train import ray_worker_resources

    cluster = ray.cluster_resources()
    for resource, each in ray_worker_resources(gpus_per_worker).items():
        has = cluster.get(resource, 0.0)
        if num_workers * each > has:
            fits = int(has // each)
            raise PreflightError(
                f"--ray-workers {num_workers} needs {num_workers * each:g} {resource} ({each:g} a worker) and "
                f"the Ray cluster has {has:g}: use --ray-workers {fits} or fewer, or a larger cluster "
                "(ray.address, ray.num_cpus)"
                if fits
                else f"--ray-workers {num_workers} needs {resource} and the Ray cluster has none: "
                "use a cluster that has (ray.address)"
            )


def _require_text_encoder(cfg: PipelineConfig, command: str) -> None:
    from train.text import text_encoder_problem

    problem = text_encoder_problem(cfg.train.text)
    if problem:
        raise PreflightError(f"{command} cannot load its text encoder: train.{problem}: set it to the model")


def _require_vae_weights(cfg: PipelineConfig, command: str) -> None:
    from train.vae import CONFIG_FILE, WEIGHTS_FILE

    folder = cfg.train.vae.weights_path
    if folder is None:
        raise PreflightError(
            f"{command} needs the video autoencoder and train.vae.weights_path is not set: "
            "set it to the folder `reelforge train-vae` writes (train.vae_train.out_dir)"
        )
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (Path(folder) / name).is_file()]
    if missing:
        raise PreflightError(
            f"no video autoencoder at {folder} (train.vae.weights_path; {' and '.join(missing)} missing): "
            "run `reelforge train-vae` first"
        )


def _require_checkpoint(cfg: PipelineConfig) -> None:
    from train.sample import SampleSetupError, check_sample_setup, resolve_checkpoint

    try:
        checkpoint = resolve_checkpoint(cfg.sample.checkpoint)
    except FileNotFoundError:
        raise PreflightError(
            f"no trained checkpoint at {cfg.sample.checkpoint} (sample.checkpoint): run `reelforge train` "
            "first, or set sample.checkpoint to a training out_dir or a step folder"
        ) from None
    try:
        check_sample_setup(cfg.sample, checkpoint)
    except SampleSetupError as err:
        raise PreflightError(str(err)) from None
