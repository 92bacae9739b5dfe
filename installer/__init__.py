"""The ZVM installer (``zvm-install``): one set of questions and one sequence of steps, behind an interactive
terminal wizard and a silent mode that reads an answer file.

    questions.py   what is asked, each answer's default and check (the answer-file keys are its keys)
    checks.py      the checks that reach out: vCenter login and certificate, PostgreSQL, ports, certificates
    answers.py     answer files (TOML or YAML): read, checked against a schema, written without secrets
    prompt.py      the terminal side: one question at a time, a way back, the summary to confirm
    layout.py      where an installed ZVM's files are (under --root for a staging tree)
    accounts.py    the ``zvm`` system user
    content.py     what it writes: zvm.toml, the install record, the certificate's names
    unit.py        the systemd unit, and its command line run directly where systemd is not PID 1
    service.py     starting and stopping it: systemctl, or the unit's command line run directly; the wait for it
    steps.py       steps that check, change, and undo; a failed run undoes what it changed
    install.py     install, reconfigure, upgrade and uninstall as sequences of steps
    dbstep.py      the database step, run as the service's user: migrations, site, vCenter secret, admin
    plugin.py      the vSphere Client plugin registration (zvm.vcenter.extension)
    wizard.py      the command line
"""
