"""What the serving process and its workers say to each other: the framed protocol on the control
socket and the response pipes (``protocol``), and the JSON of bodies, chunks and errors
(``encoding``). Stdlib only: both processes import this folder.
"""
