"""The user's path through the real scripts, as subprocesses: prepare shakespeare_char -> train a few
iterations -> resume for a few more -> sample, and the resumed run's losses equal an uninterrupted run's."""

import re

from conftest import copy_prepare, iter_losses, load, run_script, tiny_text

TRAIN = ['--dataset=shakespeare_char', '--device=cpu', '--compile=False', '--n_layer=2', '--n_head=2',
         '--n_embd=32', '--block_size=32', '--batch_size=8', '--eval_interval=4', '--eval_iters=2',
         '--log_interval=1', '--always_save_checkpoint=True', '--warmup_iters=2', '--lr_decay_iters=8']


def test_prepare_train_resume_sample(tmp_path):
    # a user's checkout: the prepare script beside its input, the helpers it imports at the root
    data_dir = copy_prepare(tmp_path, 'shakespeare_char')
    text = tiny_text()
    (data_dir / 'input.txt').write_text(text)
    run_script(data_dir / 'prepare.py', cwd=tmp_path)

    straight = run_script('train.py', *TRAIN, '--max_iters=8', '--out_dir=straight', cwd=tmp_path).stdout
    run_script('train.py', *TRAIN, '--max_iters=4', '--out_dir=resumed', cwd=tmp_path)
    resumed = run_script('train.py', *TRAIN, '--max_iters=8', '--out_dir=resumed', '--init_from=resume',
                         cwd=tmp_path).stdout
    losses, again = iter_losses(straight), iter_losses(resumed)
    after = [k for k in again if k > 4]
    assert after and after[-1] == list(losses)[-1]  # the resumed run goes on to where the straight one ended
    assert {k: again[k] for k in after} == {k: losses[k] for k in after}
    assert re.search(r'^step 8: train loss [\d.]+, val loss [\d.]+', resumed, re.M)
    ckpt = load(tmp_path / 'resumed' / 'ckpt.pt')
    assert ckpt['iter_num'] == 8 and ckpt['config']['dataset'] == 'shakespeare_char'

    out = run_script('sample.py', '--out_dir=resumed', '--device=cpu', '--num_samples=2', '--max_new_tokens=40',
                     '--start=ROMEO:', cwd=tmp_path).stdout
    samples = out.split('meta.pkl...\n', 1)[1].split('---------------\n')  # after the loading messages
    assert len(samples) == 3 and samples[-1] == ''
    for s in samples[:2]:
        body = s.removesuffix('\n')  # print's newline (the sample itself may end in newlines)
        assert body.startswith('ROMEO:') and len(body) == len('ROMEO:') + 40
        assert set(body) <= set(text)  # decoded through the dataset's own meta.pkl
