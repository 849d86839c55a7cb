"""The runnable programs, each readable top to bottom: distill, finetune, sweep, bench, quickstart.

The CLI (`tadistill.commands`) parses arguments and calls one of these; the library
pieces they are written with live in the packages named for what they are.
"""
