"""Train one recurrent configuration on the Free Spoken Digit Dataset.

    python examples/spoken_digits.py --cell gru --method ternary --out /tmp/fsdd_gru_ternary.keras
    python examples/spoken_digits.py --split speaker --fold 3 --augment --method exponential --stochastic \
        --out /tmp/fsdd_spk3.keras
    python examples/spoken_digits.py --split speaker --fold 3 --normalize speaker --augment --noise 0.3 \
        --dropout 0.3 --train-on-validation --epochs 17 --out /tmp/fsdd_spk3_all5.keras

LSTMs are fine-tuned from the float model of the same settings by default (the recipe that
matches float for LSTMs; results/findings.md, item 12; ``--finetune-lr 0`` turns it off):
the float LSTM trains first, then the rounded one from its weights at 5e-4. To reuse a
float model already trained, name it:

    python examples/spoken_digits.py --cell lstm --noise 0.3 --dropout 0.3 --finetune-lr 0 \
        --out /tmp/lstm_float.keras
    python examples/spoken_digits.py --cell lstm --noise 0.3 --dropout 0.3 --method ternary \
        --init-from /tmp/lstm_float.keras --out /tmp/lstm_ternary.keras

Prints validation and test accuracy (test once, on the best-validation epoch; with
``--train-on-validation`` the validation utterances join the training set, the model of the
last epoch is tested and there is no validation number) and saves
the ``.keras`` model (plus a ``.json`` with settings, history and metrics next to it).
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_run_args(parser, common.FSDD_DEFAULTS)
    parser.add_argument("--split", choices=["conventional", "speaker"], default="conventional")
    parser.add_argument("--fold", default="0", help="speaker split: test speaker, 0-5 or a name")
    parser.add_argument("--features", choices=["logmel", "mfcc"], default="logmel")
    parser.add_argument("--normalize", choices=["global", "utterance", "cmn", "speaker", "none"], default="global")
    parser.add_argument("--augment", action="store_true", help="time stretch, mel warp, noise (training)")
    parser.add_argument("--specaugment", action="store_true",
                        help="with --augment: also SpecAugment time and frequency masks")
    parser.add_argument("--train-on-validation", action="store_true",
                        help="train on training + validation data for exactly --epochs (settings chosen "
                             "beforehand); tests the last epoch")
    parser.add_argument("--noise", type=float, default=0.0, help="GaussianNoise stddev on the frames")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--export", metavar="DIR",
                        help="also export the model for TensorFlow Lite Micro into DIR (stream mode: one "
                             "frame per invoke, the recurrent state carried between invokes)")
    args = parser.parse_args(argv)
    settings = common.run_args_settings(args, "fsdd")
    settings.update(split=args.split, fold=int(args.fold) if args.fold.isdigit() else args.fold,
                    features=args.features, normalize=args.normalize, augment=args.augment,
                    specaugment=args.specaugment, noise=args.noise, dropout=args.dropout,
                    train_on_validation=args.train_on_validation)
    if args.specaugment and not args.augment:
        parser.error("--specaugment needs --augment")
    result, model = common.train_and_save(common.train_fsdd, settings, args)
    if result["validation_accuracy"] is not None:
        print(f"validation accuracy {result['validation_accuracy']:.4f} (best epoch {result['best_epoch']})")
    print(f"test accuracy {result['test_accuracy']:.4f}")
    print(f"saved {args.out}")
    if args.export:
        export_stream(model, settings, args.data_dir, args.export)
    return result


def export_stream(model, settings: dict, data_dir, out_dir: str) -> None:
    """Stream-mode int8 export, calibrated on training utterances, verified on test ones."""
    from keras_lowprec.datasets import fsdd
    from keras_lowprec.export import to_tflite

    data = fsdd(data_dir, features=settings["features"], split=settings["split"], fold=settings["fold"],
                normalize=settings["normalize"])
    rng = np.random.default_rng(0)
    calibration = data.train.x[rng.permutation(len(data.train))[:200]]
    result = to_tflite(model, calibration, mode="stream", output_dir=out_dir, verify_data=data.test.x[:100])
    tflm = result.verification["tflm"]
    print(f"exported to {out_dir}: {len(result.model_bytes):,} B, arena {result.arena_bytes:,} B, "
          f"TFLM argmax agreement with Keras {tflm['argmax_agreement']:.1%} on {len(data.test.x[:100])} test utterances")


if __name__ == "__main__":
    main()
