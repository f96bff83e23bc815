"""Train one recurrent character-level language model on Penn Treebank.

    python examples/ptb_char.py --cell lstm --method exponential --stochastic --epochs 10 \
        --out /tmp/ptb_lstm_exp.keras

Early stopping on validation BPC (``--patience``); prints validation and test bits per
character (test once, on the best-validation epoch) and saves the ``.keras`` model (plus
a ``.json`` with settings, history and metrics next to it).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_run_args(parser, common.PTB_DEFAULTS)
    parser.add_argument("--seq-len", type=int, default=common.PTB_DEFAULTS["seq_len"])
    parser.add_argument("--embedding", type=int, default=common.PTB_DEFAULTS["embedding"])
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--patience", type=int, default=common.PTB_DEFAULTS["patience"],
                        help="stop after this many epochs without a better validation BPC")
    parser.add_argument("--init", choices=common.INITS, default="keras",
                        help="recurrent weights' initial values: Keras's defaults or U(-G, G) per gate")
    parser.add_argument("--max-eval-chars", type=int, default=None, help="cap validation/test length (smoke runs)")
    args = parser.parse_args(argv)
    settings = common.run_args_settings(args, "ptb")
    settings.update(seq_len=args.seq_len, embedding=args.embedding, dropout=args.dropout,
                    patience=args.patience, max_eval_chars=args.max_eval_chars, init=args.init)
    result, model = common.train_and_save(common.train_ptb, settings, args)
    print(f"validation BPC {result['validation_bpc']:.4f} (best epoch {result['best_epoch']})")
    print(f"test BPC {result['test_bpc']:.4f}")
    print(f"saved {args.out}")
    return result


if __name__ == "__main__":
    main()
