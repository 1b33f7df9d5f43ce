Start-CsWindowsService -Confirm:$false | Out-Null
Write-Result ([ordered]@{ services = (Get-Services) })
