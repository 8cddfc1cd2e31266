"""Evaluations on real conversation data: ``chatstate eval context``.

``datasets`` loads the shared data sets offline; ``recall`` defines evidence recall and the
baselines (pure); ``context`` replays each conversation through the context engine and
measures them; ``report`` prints the table and writes the JSON and the chart.
"""
